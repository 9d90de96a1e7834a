"""Data sources: what a workload feeds the model (base.py's contract); config/ holds each option's config class."""
