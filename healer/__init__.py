"""healer: run, measure and steer SFT then RL post-training, with every number in one SQLite file."""

__version__ = "0.1.0"
