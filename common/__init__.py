"""Small things every package and entry script shares, each in exactly one place: user errors and
the command line (cli), atomic file writes (files), aligned tables (tables), device choice (device)."""
