"""Kept for one release: the jobs on a run folder live in :mod:`aekit.jobs.workflow` now."""

from aekit.jobs.workflow import demo, evaluate_run, export_projector, train_run

__all__ = ["demo", "evaluate_run", "export_projector", "train_run"]
