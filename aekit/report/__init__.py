"""Pictures and pages: plots and tables, a run's figures, report.html, the Embedding Projector, TensorBoard."""
