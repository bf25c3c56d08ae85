"""The ``cnnsee`` console command.

Subcommands:

- ``cnnsee demo --logdir DIR [--epochs N] [--seed S]``: train a small CNN on synthetic shapes with CNNSee logging
  to TensorBoard under ``DIR`` (about a minute on a laptop CPU), then print the command that opens TensorBoard.
- ``cnnsee report LOGDIR [-o report.html] [--max-steps N]``: one self-contained HTML page of every run's CNNSee
  images under ``LOGDIR``, a step slider per tag, runs side by side, CNNSee's scalars as charts, hyper-parameters
  compared. ``LOGDIR`` may hold TensorBoard event files, CNNSee's PNG folders (``CSVLogger``, no logger) or an
  MLflow file store (``mlruns``).
- ``cnnsee export LOGDIR [-o DIR] [--no-gif] [--frame-ms MS] [--max-steps N]``: the same images as
  ``DIR/<run>/<tag>/step_<step>.png``, and an animated GIF per tag.

Each subcommand is one ``add_<name>_parser`` function that declares its arguments and one ``run_<name>`` function
that receives the parsed namespace and returns the exit status. Heavy imports (torch, Lightning) happen inside the
``run_`` functions, so ``cnnsee --help`` answers at once.

Example::

    >>> from lightning_cnnsee.cli import build_parser
    >>> args = build_parser().parse_args(["demo", "--logdir", "runs", "--epochs", "2"])
    >>> args.command, args.logdir, args.epochs, args.seed
    ('demo', 'runs', 2, 0)
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence

__all__ = [
    "DEFAULT_DEMO_EPOCHS",
    "add_demo_parser",
    "add_export_parser",
    "add_report_parser",
    "build_parser",
    "main",
    "non_negative_int",
    "positive_int",
    "print_problems",
    "run_demo_command",
    "run_export_command",
    "run_report_command",
    "int_argument",
]

DEFAULT_DEMO_EPOCHS = 8


def int_argument(minimum: int, expected: str) -> Callable[[str], int]:
    """An ``argparse`` type: an int >= ``minimum``, with an error message that shows what was given."""

    def parse(text: str) -> int:
        try:
            value: int | None = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


positive_int = int_argument(1, "a positive whole number")
non_negative_int = int_argument(0, "a whole number >= 0")


def add_demo_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train a small CNN on synthetic shapes with CNNSee on, then show how to open TensorBoard",
        description=(
            "Train a small CNN on synthetic shapes (circle, square, triangle, cross, ring, star among clutter) "
            "with the CNNSee callback logging Grad-CAM, filter patterns and activations to TensorBoard. "
            "Takes about a minute on a laptop CPU; needs no download."
        ),
    )
    parser.add_argument(
        "--logdir",
        default="runs",
        metavar="DIR",
        help="folder for the TensorBoard logs, written to DIR/demo/version_N (default: %(default)s)",
    )
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=DEFAULT_DEMO_EPOCHS,
        metavar="N",
        help="training epochs (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        metavar="S",
        help="seed of the data, the weights and the data order (default: %(default)s)",
    )
    parser.set_defaults(handler=run_demo_command)


def run_demo_command(args: argparse.Namespace) -> int:
    from lightning_cnnsee import demo

    trainer = demo.run_demo(args.logdir, max_epochs=args.epochs, seed=args.seed)
    accuracy = trainer.callback_metrics.get("val/acc")
    if accuracy is not None:
        print(f"Validation accuracy after {args.epochs} epochs: {float(accuracy):.1%}")
    print("See what the CNN saw (then open http://localhost:6006):")
    print(f"    tensorboard --logdir {shlex.quote(args.logdir)}")
    return 0


def _add_review_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "logdir",
        metavar="LOGDIR",
        help="the log folder: one run's folder, or any folder above runs. A run is a folder with "
        "TensorBoard event files (e.g. version_0), a folder with CNNSee's cnnsee/ folder of "
        "step_N.png files (CSVLogger or no logger), or an MLflow run (mlruns/<experiment>/<run>)",
    )
    parser.add_argument(
        "--max-steps",
        type=positive_int,
        default=None,
        metavar="N",
        help="at most N steps per tag and run, evenly spaced, first and last kept (default: all)",
    )
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="show progress bars on stderr (default: only when stderr is a terminal)",
    )
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def add_report_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write one self-contained HTML page to review CNNSee logs: a step slider per tag, runs side by side",
        description=(
            "Read the CNNSee images and scalars (tags cnnsee/...) of every run under LOGDIR and write one HTML file "
            "that needs nothing else (images embedded, charts drawn inline, no external resources): per tag, one "
            "column per run and a slider over the steps; CNNSee's faithfulness, drift and overhead as line charts; "
            "the runs' hyper-parameters side by side. Event records failing their checksum are reported on stderr "
            "and in the page; the rest of that file is skipped, as TensorBoard does."
        ),
    )
    _add_review_arguments(parser)
    parser.add_argument(
        "-o", "--output", default="report.html", metavar="FILE", help="the HTML file to write (default: %(default)s)"
    )
    parser.add_argument("--title", default=None, help="the page title (default: LOGDIR)")
    parser.set_defaults(handler=run_report_command)


def add_export_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write CNNSee logs as PNG files (DIR/<run>/<tag>/step_N.png) and an animated GIF per tag",
        description=(
            "Read the CNNSee images (tags cnnsee/...) of every run under LOGDIR and write each as "
            "DIR/<run>/<tag>/step_<step>.png, and each tag's steps as DIR/<run>/<tag>.gif."
        ),
    )
    _add_review_arguments(parser)
    parser.add_argument(
        "-o", "--output", default="cnnsee-images", metavar="DIR", help="the folder to write to (default: %(default)s)"
    )
    parser.add_argument("--no-gif", dest="gif", action="store_false", help="PNG files only, no GIFs")
    parser.add_argument(
        "--frame-ms",
        type=positive_int,
        default=500,
        metavar="MS",
        help="how long each GIF frame shows, in milliseconds (default: %(default)s)",
    )
    parser.set_defaults(handler=run_export_command)


def print_problems(command: str, problems: list[str]) -> None:
    """What the review could not read (a record failing its checksum, ...), one warning line each on stderr."""
    for problem in problems:
        print(f"cnnsee {command}: warning: {problem}", file=sys.stderr)


def run_report_command(args: argparse.Namespace) -> int:
    from lightning_cnnsee.review import NothingToReview, write_report

    try:
        summary = write_report(
            args.logdir, args.output, max_steps=args.max_steps, title=args.title, progress=args.progress
        )
    except NothingToReview as error:
        print(f"cnnsee report: {error}", file=sys.stderr)
        return 1
    print_problems("report", summary.problems)
    print(
        f"Wrote {summary.path} ({summary.size_bytes / 1e6:.1f} MB): {summary.runs} run(s), {summary.tags} tags, "
        f"{summary.frames} images, {summary.charts} charts. Open it in a browser."
    )
    return 0


def run_export_command(args: argparse.Namespace) -> int:
    from lightning_cnnsee.review import NothingToReview, export_images

    try:
        summary = export_images(
            args.logdir,
            args.output,
            gif=args.gif,
            frame_ms=args.frame_ms,
            max_steps=args.max_steps,
            progress=args.progress,
        )
    except NothingToReview as error:
        print(f"cnnsee export: {error}", file=sys.stderr)
        return 1
    print_problems("export", summary.problems)
    print(f"Wrote {summary.pngs} PNG files and {summary.gifs} GIFs under {summary.folder}.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``cnnsee`` argument parser, one subparser per subcommand."""
    parser = argparse.ArgumentParser(
        prog="cnnsee",
        description="See what your CNN sees while it trains: Grad-CAM, filter ascent and activations in TensorBoard.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands", required=True)
    add_demo_parser(subparsers)
    add_report_parser(subparsers)
    add_export_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cnnsee`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit status.

    Bad arguments exit with status 2 and a message naming the argument (``argparse``'s convention).

    Example::

        >>> from lightning_cnnsee.cli import main
        >>> main(["demo", "--logdir", "runs", "--epochs", "8"])  # doctest: +SKIP
    """
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
