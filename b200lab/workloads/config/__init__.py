"""The workloads' config classes: options, checks and capabilities (torch-free)."""
