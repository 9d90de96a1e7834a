"""Workloads: what a timed step does. conf/workload/NAME.yaml names the class by ``_target_``."""
