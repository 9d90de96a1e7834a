"""b200lab: a Hydra-configured experiment lab for LLM performance work on NVIDIA GPUs."""

__version__ = "0.1.0"
