"""Tally: counts each person once per petition and serves the counts."""
