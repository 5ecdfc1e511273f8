"""The uses of a trained run: denoising and super-resolution (:mod:`aekit.uses.enhance`), compression
(:mod:`aekit.uses.compress`, files in the format of :mod:`aekit.codec`) and anomaly scores of files
(:mod:`aekit.uses.scoring`), over the machinery of jobs on files they share (:mod:`aekit.uses.file_jobs`)."""
