"""bench: benchmark and ablate multi-task fine-tuning strategies."""

__version__ = "0.1.0"
