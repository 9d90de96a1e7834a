"""Precision recipes: a class per recipe, named by ``_target_`` in conf/precision/*.yaml.

A recipe converts the model once (torchtitan's converter idea: cast weights, or swap layers for
FP8 ones) and supplies the autocast context each step runs under. ``effective`` records what ran.
"""
