"""Small things every package and entry script shares, each in exactly one place: user errors and
the command line (cli), atomic file writes (files), aligned tables (tables), device choice and the
resident copies on it (device), one writer per run directory (lock), the Colab set-up rule (colab),
whether an accuracy beats guessing (chance)."""
