"""CNNSee from a YAML file: the built-in shapes data set and CNN, trained with Lightning's ``LightningCLI``.

Every option of the model (:class:`~lightning_cnnsee.demo.train.ShapesClassifier`), the data
(:class:`~lightning_cnnsee.demo.train.ShapesDataModule`), the trainer and its callbacks, CNNSee included, comes from
``configs/shapes.yaml`` or the command line, checked by jsonargparse against their type annotations::

    python examples/shapes.py fit --config configs/shapes.yaml
    python examples/shapes.py fit --config configs/shapes.yaml --trainer.max_epochs=2 --data.num_train=1024
    python examples/shapes.py fit --config configs/shapes.yaml --print_config    # the full, checked configuration

The TensorBoard logs go to ``runs/shapes/version_N`` (see ``trainer.logger`` in the config); review them with
``tensorboard --logdir runs`` or ``cnnsee report runs -o report.html``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

try:  # `pip install lightning` (import lightning as L), or the standalone pytorch-lightning package
    from lightning.pytorch.cli import LightningCLI
except ImportError:
    from pytorch_lightning.cli import LightningCLI

from lightning_cnnsee.demo.train import ShapesClassifier, ShapesDataModule


def main(args: Sequence[str] | None = None) -> LightningCLI:
    """Run the command line (``args``, default ``sys.argv[1:]``) and return the ``LightningCLI``."""
    with warnings.catch_warnings():
        # The data is in memory; Lightning's advice to add DataLoader workers does not apply.
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        return LightningCLI(ShapesClassifier, ShapesDataModule, args=args)


if __name__ == "__main__":
    main()
