"""Static, self-contained HTML report of a curation run (``curate report``)."""

from curate.report.build import build_report, collect, render

__all__ = ["build_report", "collect", "render"]
