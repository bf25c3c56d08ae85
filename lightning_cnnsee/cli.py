"""The ``cnnsee`` console command.

Subcommands:

- ``cnnsee demo --logdir DIR [--epochs N] [--seed S] [--leak]``: train a small CNN on synthetic shapes with CNNSee
  logging to TensorBoard under ``DIR`` (about a minute on a laptop CPU), then print the command that opens
  TensorBoard; ``--leak`` adds a class-coded corner marker, a shortcut CNNSee warns of.
- ``cnnsee report LOGDIR [-o report.html] [--max-steps N]``: one self-contained HTML page of every run's CNNSee
  images under ``LOGDIR``, a step slider per tag, runs side by side, CNNSee's scalars as charts, hyper-parameters
  compared. ``LOGDIR`` may hold TensorBoard event files, CNNSee's PNG folders (``CSVLogger``, no logger) or an
  MLflow file store (``mlruns``).
- ``cnnsee export LOGDIR [-o DIR] [--no-gif] [--frame-ms MS] [--max-steps N]``: the same images as
  ``DIR/<run>/<tag>/step_<step>.png``, and an animated GIF per tag.
- ``cnnsee replay CHECKPOINTS... [--config config.yaml] [--model CLASS] [--data CLASS] [--model.x=V] [--cnnsee YAML]
  [--logdir DIR] [--name NAME] [--logger tensorboard|csv]``: CNNSee's pictures and numbers for a run trained without
  it, made from its checkpoints (files or folders of ``*.ckpt``) at each checkpoint's step, into a new log folder.

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
import os
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
    parser.add_argument(
        "--checkpoints",
        action="store_true",
        help="save a checkpoint at every epoch end in DIR/demo/version_N/checkpoints (for cnnsee replay)",
    )
    parser.add_argument(
        "--no-cnnsee",
        dest="cnnsee",
        action="store_false",
        help="train without CNNSee (with --checkpoints: a run to see afterwards with cnnsee replay)",
    )
    parser.add_argument(
        "--leak",
        action="store_true",
        help="put a class-coded marker in the corner of every image (a shortcut) and give CNNSee the shapes' "
        "boxes: the model learns the marker and CNNSee warns of the shortcut (logs in DIR/demo-leak/version_N)",
    )
    parser.set_defaults(handler=run_demo_command)


def run_demo_command(args: argparse.Namespace) -> int:
    from lightning_cnnsee import demo

    extra = {"checkpoints": True} if getattr(args, "checkpoints", False) else {}
    if getattr(args, "leak", False):
        extra["leak"] = True
    if not getattr(args, "cnnsee", True):
        extra["with_cnnsee"] = False
    trainer = demo.run_demo(args.logdir, max_epochs=args.epochs, seed=args.seed, **extra)
    accuracy = trainer.callback_metrics.get("val/acc")
    if accuracy is not None:
        print(f"Validation accuracy after {args.epochs} epochs: {float(accuracy):.1%}")
    if extra.get("checkpoints"):
        folder = os.path.join(trainer.logger.log_dir, "checkpoints")
        print("Replay CNNSee on its checkpoints (see the README, 'Replay a run trained without CNNSee'):")
        print(f"    {demo_replay_command(folder, args.logdir)}")
    if extra.get("with_cnnsee", True):
        print("See what the CNN saw (then open http://localhost:6006):")
        print(f"    tensorboard --logdir {shlex.quote(args.logdir)}")
    return 0


#: CNNSee's options in the demo (``run_demo``'s default callback), as ``cnnsee replay --cnnsee`` takes them.
DEMO_CNNSEE = (
    "{mean: [0.5, 0.5, 0.5], std: [0.263, 0.263, 0.263], "
    "class_names: [circle, square, triangle, cross, ring, star], max_overhead: null}"
)


def demo_replay_command(checkpoints: str, logdir: str) -> str:
    """The ``cnnsee replay`` command for the demo's checkpoints in ``checkpoints``, logging to ``logdir/demo-replay``
    (torch-free: the demo's options are spelled out, checked against the demo's own by a test)."""
    return shlex.join(
        [
            "cnnsee",
            "replay",
            checkpoints,
            "--model",
            "lightning_cnnsee.demo.train.ShapesClassifier",
            "--data",
            "lightning_cnnsee.demo.train.ShapesDataModule",
            "--cnnsee",
            DEMO_CNNSEE,
            "--logdir",
            logdir,
            "--name",
            "demo-replay",
        ]
    )


def add_progress_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """``--progress`` / ``--no-progress``: ``what`` on stderr, by default only when stderr is a terminal."""
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help=f"show {what} on stderr (default: only when stderr is a terminal)",
    )
    progress.add_argument("--no-progress", dest="progress", action="store_false", help=f"do not show {what}")


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
    add_progress_arguments(parser, "progress bars")


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
    from lightning_cnnsee.review import readable

    for problem in problems:
        print(readable(f"cnnsee {command}: warning: {problem}"), file=sys.stderr)


def run_report_command(args: argparse.Namespace) -> int:
    from lightning_cnnsee.review import NothingToReview, readable, write_report

    try:
        summary = write_report(
            args.logdir, args.output, max_steps=args.max_steps, title=args.title, progress=args.progress
        )
    except NothingToReview as error:
        print(f"cnnsee report: {error}", file=sys.stderr)
        return 1
    print_problems("report", summary.problems)
    print(
        f"Wrote {readable(summary.path)} ({summary.size_bytes / 1e6:.1f} MB): {summary.runs} run(s), "
        f"{summary.tags} tags, {summary.frames} images, {summary.charts} charts. Open it in a browser."
    )
    return 0


def run_export_command(args: argparse.Namespace) -> int:
    from lightning_cnnsee.review import NothingToReview, export_images, readable

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
    print(f"Wrote {summary.pngs} PNG files and {summary.gifs} GIFs under {readable(summary.folder)}.")
    return 0


def add_replay_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="CNNSee's pictures and numbers for a run trained without it, made from its checkpoints",
        description=(
            "Load each checkpoint's weights, in the order of its global step, and log at that step what a live "
            "CNNSee would have logged: the same validation images, pictures, faithfulness and drift (drift against "
            "the first checkpoint replayed). The model and data come as LightningCLI gives them: the config.yaml it "
            "saves beside a run, or --model/--data class paths with --model.KEY=VALUE / --data.KEY=VALUE arguments. "
            "A checkpoint that does not load or does not fit the model is named and skipped."
        ),
    )
    parser.add_argument(
        "checkpoints", nargs="+", metavar="CHECKPOINT", help="checkpoint files, or folders searched for *.ckpt"
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="LightningCLI's config.yaml of the run: model, data, seed_everything, the CNNSee of trainer.callbacks",
    )
    parser.add_argument("--model", metavar="CLASS_PATH", help="the LightningModule class (package.module.Class)")
    parser.add_argument("--model-args", metavar="YAML", help="the model's arguments, YAML text or a YAML file")
    parser.add_argument("--data", metavar="CLASS_PATH", help="the LightningDataModule class (package.module.Class)")
    parser.add_argument("--data-args", metavar="YAML", help="the data module's arguments, YAML text or a YAML file")
    parser.add_argument(
        "--cnnsee",
        metavar="YAML",
        help="CNNSee's options, YAML text such as '{every_n_epochs: 1, cam_method: layercam}' or a YAML file, over "
        "the config's CNNSee (default: CNNSee's defaults)",
    )
    parser.add_argument(
        "--logdir", default="runs", metavar="DIR", help="root folder of the logs (default: %(default)s)"
    )
    parser.add_argument(
        "--name", default="replay", help="run name: logs go to DIR/NAME/version_N (default: %(default)s)"
    )
    parser.add_argument(
        "--logger",
        choices=("tensorboard", "csv"),
        default="tensorboard",
        help="TensorBoard event files, or CNNSee's PNG folders of a CSVLogger (default: %(default)s)",
    )
    parser.add_argument("--accelerator", default=None, help="Lightning accelerator (default: the config's, or auto)")
    parser.add_argument(
        "--no-weights-only",
        dest="weights_only",
        action="store_false",
        help="load checkpoints that hold other objects than tensors (only checkpoints you trust)",
    )
    add_progress_arguments(parser, "a progress bar over the checkpoints")
    parser.set_defaults(handler=run_replay_command, accepts_overrides=True)


def run_replay_command(args: argparse.Namespace) -> int:
    import warnings

    from lightning_cnnsee import find_checkpoints, replay, run_parts

    try:
        checkpoints = find_checkpoints(args.checkpoints)
        parts = run_parts(
            args.config,
            model=args.model,
            model_args=args.model_args,
            data=args.data,
            data_args=args.data_args,
            overrides=args.overrides,
            cnnsee=args.cnnsee,
            checkpoints=checkpoints,
            weights_only=args.weights_only,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"cnnsee replay: error: {error}", file=sys.stderr)
        return 2
    logger = parts.logger(args.logger, args.logdir, args.name)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"cnnsee replay skipped")  # said below, one line each
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        summary = replay(
            checkpoints,
            parts.model,
            datamodule=parts.datamodule,
            callback=parts.callback,
            logger=logger,
            accelerator=args.accelerator or parts.accelerator,
            num_sanity_val_steps=parts.num_sanity_val_steps,
            weights_only=args.weights_only,
            progress=args.progress,
        )
    for path, reason in summary.skipped:
        print(f"cnnsee replay: skipped {path}: it {reason}", file=sys.stderr)
    if not summary.replayed:
        print("cnnsee replay: no checkpoint replayed.", file=sys.stderr)
        return 1
    steps = [step for _, step in summary.replayed]
    folder = summary.log_dir or args.logdir
    print(f"Replayed {len(steps)} checkpoint(s), steps {steps[0]} to {steps[-1]}, into {folder}. See them with:")
    if args.logger == "tensorboard":
        print(f"    tensorboard --logdir {shlex.quote(folder)}")
    print(f"    cnnsee report {shlex.quote(folder)} -o report.html")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``cnnsee`` argument parser, one subparser per subcommand."""
    parser = argparse.ArgumentParser(
        prog="cnnsee",
        description="See what your model sees while it trains: CAMs, attributions, filter ascent, activations and "
        "shortcut warnings in TensorBoard, W&B, MLflow or PNG folders.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands", required=True)
    add_demo_parser(subparsers)
    add_report_parser(subparsers)
    add_export_parser(subparsers)
    add_replay_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cnnsee`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit status.

    Bad arguments exit with status 2 and a message naming the argument (``argparse``'s convention).

    Example::

        >>> from lightning_cnnsee.cli import main
        >>> main(["demo", "--logdir", "runs", "--epochs", "8"])  # doctest: +SKIP
    """
    parser = build_parser()
    rest, overrides = split_overrides(list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(rest)
    if overrides and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(overrides)}")
    args.overrides = overrides
    return args.handler(args)


OVERRIDE_PREFIXES = ("--model.", "--data.")


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """``(the rest, overrides)``: ``cnnsee replay``'s ``--model.KEY=VALUE`` and ``--data.KEY VALUE`` arguments (with
    their value) taken out of ``argv``, for LightningCLI's syntax that argparse does not know.

    Example::

        >>> split_overrides(["replay", "ckpts", "--model.lr=0.1", "--data.num_val", "32", "--name", "r"])
        (['replay', 'ckpts', '--name', 'r'], ['--model.lr=0.1', '--data.num_val', '32'])
    """
    rest, overrides = [], []
    index = 0
    while index < len(argv):
        argument = argv[index]
        if argument.startswith(OVERRIDE_PREFIXES):
            overrides.append(argument)
            if "=" not in argument and index + 1 < len(argv):
                index += 1
                overrides.append(argv[index])
        else:
            rest.append(argument)
        index += 1
    return rest, overrides


if __name__ == "__main__":
    sys.exit(main())
