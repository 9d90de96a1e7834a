"""The precision options' config classes: fields, checks and capabilities (torch-free)."""
