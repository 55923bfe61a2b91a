"""Reproduction experiments: the loss ablation (ablation.py), its results page (report.py) and
the targets it is held to (targets.py)."""
