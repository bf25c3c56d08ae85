"""Review CNNSee logs after training: one self-contained HTML page, or PNG files and animated GIFs.

``cnnsee report LOGDIR -o report.html`` runs :func:`write_report`; ``cnnsee export LOGDIR -o DIR`` runs
:func:`export_images`. Both read the event files with TensorBoard's own reader (:mod:`.logs`), every folder with
event files under ``LOGDIR`` being one run, and raise :class:`NothingToReview` with a message saying what is missing
when there is nothing to show.

Example::

    >>> from lightning_cnnsee.review import export_images, write_report
    >>> write_report("runs", "report.html").size_bytes  # doctest: +SKIP
    4512345
    >>> export_images("runs", "cnnsee-images").gifs  # doctest: +SKIP
    16
"""

from lightning_cnnsee.review.export import ExportSummary, export_images, write_gif
from lightning_cnnsee.review.logs import Frame, NothingToReview, Run, find_run_dirs, load_runs
from lightning_cnnsee.review.report import ReportSummary, render_report, write_report

__all__ = [
    "ExportSummary",
    "Frame",
    "NothingToReview",
    "ReportSummary",
    "Run",
    "export_images",
    "find_run_dirs",
    "load_runs",
    "render_report",
    "write_gif",
    "write_report",
]
