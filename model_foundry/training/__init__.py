"""Training: the loop, optimizer, schedules, precision, checkpoints, and the `train()` entry point."""
