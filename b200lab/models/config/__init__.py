"""The model families' config classes: fields, checks and capabilities (torch-free)."""
