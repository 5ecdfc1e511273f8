"""Training: the options of a run declared once (settings), one loop for every model (trainer), its batch sources,
CUDA graphs, torchrun, and the run folder the trainer hands its files to."""
