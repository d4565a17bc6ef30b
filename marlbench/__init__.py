"""marlbench: a benchmark suite for offline multi-agent reinforcement learning."""

__version__ = "0.1.0"
