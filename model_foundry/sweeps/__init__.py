"""Sweeps: a grid of training runs over config values and seeds, summarised as CSV tables and a plot."""
from model_foundry.sweeps.sweep import format_summary, parse_grid, parse_seeds, run_sweep, summarise

__all__ = ["format_summary", "parse_grid", "parse_seeds", "run_sweep", "summarise"]
