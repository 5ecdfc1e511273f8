"""Kept for one release: the run's report.html is written by :mod:`aekit.report.html` now."""

from aekit.report.html import write_report

__all__ = ["write_report"]
