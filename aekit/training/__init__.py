"""Training: the options of a run, declared once (:mod:`aekit.training.settings`), from which the command line's
flags, config.json's options and the scikit-learn estimators' parameters follow."""
