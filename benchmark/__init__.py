"""bench.py's library: the loaders that compete (loaders), the stages (stages), timing and deadlines
(measure), the machine's load and the thread count (machine), what the figures allow one to say
(verdict), the training step's fast paths (fastpaths), the scaling sweep (scaling), the hardware's
limits (limits), the JSON and tables (report), bench.png (plot), and one run top to bottom (run).
Options are declared once, in options."""
