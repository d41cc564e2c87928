"""Reporting: curves as PNG plots and tables of runs from their results.json."""
