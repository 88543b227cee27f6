"""What train.py and bench.py share: the config, building model/optimizer/schedule, the training step,
evaluation, the LR range test, the run log, and the loop itself (fit)."""
