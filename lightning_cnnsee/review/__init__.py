"""Review CNNSee logs after training: one self-contained HTML page, or PNG files and animated GIFs.

``cnnsee report LOGDIR -o report.html`` runs :func:`write_report`; ``cnnsee export LOGDIR -o DIR`` runs
:func:`export_images`. Both find the runs under ``LOGDIR`` (:mod:`.logs`): folders of TensorBoard event files (read
by :mod:`.events`, records checksummed in C), CNNSee's PNG folders and MLflow runs (:mod:`.folders`). They hold
where each image lies, not the image, and raise :class:`NothingToReview` with a message saying what is missing
when there is nothing to show. Nothing here imports torch.

Example::

    >>> from lightning_cnnsee.review import export_images, write_report
    >>> write_report("runs", "report.html").size_bytes  # doctest: +SKIP
    4512345
    >>> export_images("runs", "cnnsee-images").gifs  # doctest: +SKIP
    16
"""

from lightning_cnnsee.review.charts import Chart, Series, charts_of
from lightning_cnnsee.review.export import ExportSummary, export_images, write_gif
from lightning_cnnsee.review.logs import RunFolder, find_run_dirs, find_runs, load_runs
from lightning_cnnsee.review.records import (
    ChecksumError,
    CutRecord,
    DamagedFile,
    EmptyFile,
    NotAnEventFile,
    iter_records,
)
from lightning_cnnsee.review.report import ReportSummary, render_report, write_report
from lightning_cnnsee.review.runs import FileRegion, Frame, NothingToReview, Run
from lightning_cnnsee.vocabulary.names import readable

__all__ = [
    "Chart",
    "ChecksumError",
    "CutRecord",
    "DamagedFile",
    "EmptyFile",
    "NotAnEventFile",
    "ExportSummary",
    "FileRegion",
    "Frame",
    "NothingToReview",
    "ReportSummary",
    "Run",
    "RunFolder",
    "Series",
    "charts_of",
    "export_images",
    "find_run_dirs",
    "find_runs",
    "iter_records",
    "load_runs",
    "readable",
    "render_report",
    "write_gif",
    "write_report",
]
