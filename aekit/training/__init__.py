"""The training: run options declared once (settings), one loop for every model (trainer), batch
sources, CUDA graphs, torchrun, and the run folder the trainer hands its files to."""
