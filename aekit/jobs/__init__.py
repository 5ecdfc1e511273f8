"""Whole jobs on a run folder: train, resume, evaluate, export the projector, the demo, compare."""
