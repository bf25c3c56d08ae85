"""The ``cnnsee`` console command.

Subcommands:

- ``cnnsee demo --logdir DIR [--epochs N] [--seed S]``: train a small CNN on synthetic shapes with CNNSee logging
  to TensorBoard under ``DIR`` (about a minute on a laptop CPU), then print the command that opens TensorBoard.

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
from collections.abc import Sequence

DEFAULT_DEMO_EPOCHS = 8


def positive_int(text: str) -> int:
    """``argparse`` type: an int >= 1, with an error message that shows what was given."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """``argparse`` type: an int >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


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
    parser.add_argument("--logdir", default="runs", metavar="DIR",
                        help="folder for the TensorBoard logs, written to DIR/demo/version_N (default: %(default)s)")
    parser.add_argument("--epochs", type=positive_int, default=DEFAULT_DEMO_EPOCHS, metavar="N",
                        help="training epochs (default: %(default)s)")
    parser.add_argument("--seed", type=non_negative_int, default=0, metavar="S",
                        help="seed of the data, the weights and the data order (default: %(default)s)")
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


def build_parser() -> argparse.ArgumentParser:
    """The ``cnnsee`` argument parser, one subparser per subcommand."""
    parser = argparse.ArgumentParser(
        prog="cnnsee",
        description="See what your CNN sees while it trains: Grad-CAM, filter ascent and activations in TensorBoard.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands", required=True)
    add_demo_parser(subparsers)
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
