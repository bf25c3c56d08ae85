"""Which number per image a class-activation map explains, for classifiers, multi-label models and segmentation.

A CAM explains one scalar per image, the *score*. What that scalar is depends on the kind of model:

- ``"classification"``: scores (N, C); the score of image n is the logit of its target class, ``s[n, c_n]``.
- ``"binary"``: scores (N, 1), one logit of a binary classifier (``BCEWithLogitsLoss``); class 1 is the positive
  class (``sigmoid(s) > 0.5``), and the score is ``s`` for class 1 and ``-s`` for class 0, as pytorch-grad-cam's
  ``BinaryClassifierOutputTarget``; its probabilities are ``sigmoid(s)`` and ``1 - sigmoid(s)``
  (:func:`class_probabilities`). One logit is always read this way (a softmax over one class is constant).
- ``"multilabel"``: scores (N, C) of independent labels (one sigmoid each); the score is the logit of label k,
  ``s[n, k]``, and a map is made per label that is predicted (``sigmoid(s) > 0.5``) or true
  (:func:`multilabel_targets` lists those pairs).
- ``"segmentation"``: scores (N, C, H, W); the score is the sum of class c's output over the pixels predicted as c
  (``argmax`` over classes), as pytorch-grad-cam's ``SemanticSegmentationTarget`` with the predicted mask:
  ``sum_ij s[n, c, i, j] * [argmax_k s[n, k, i, j] == c]``. The mask is taken from the unperturbed forward pass and
  kept fixed when the same score is read from other forward passes (masked or ablated inputs).

Example::

    >>> import torch
    >>> from lightning_cnnsee.explain.targets import model_kind, score_function
    >>> segmentation = torch.tensor([[[[2.0, 0.0]], [[1.0, 3.0]]]])  # (1 image, 2 classes, 1 x 2 pixels)
    >>> model_kind({"out": segmentation})
    'segmentation'
    >>> score = score_function(segmentation, targets=1)
    >>> score.masks.tolist(), score(segmentation).tolist()  # class 1 wins the second pixel only
    ([[[False, True]]], [3.0])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_cnnsee.explain.layers import OutputKey, select_output
from lightning_cnnsee.vocabulary.checks import known

__all__ = [
    "MODEL_KINDS",
    "Score",
    "Targets",
    "check_kind",
    "class_indices",
    "class_scores",
    "model_kind",
    "multilabel_targets",
    "resolve_targets",
    "score_function",
    "segmentation_masks",
    "segmentation_scores",
]

MODEL_KINDS: tuple[str, ...] = ("classification", "multilabel", "segmentation", "binary")

Targets = int | Tensor | Sequence[int] | None


def check_kind(kind: str) -> str:
    """Return ``kind`` if it is one of :data:`MODEL_KINDS`; raise ``ValueError`` naming the valid choices otherwise.

    Args:
        kind: ``"classification"``, ``"multilabel"``, ``"segmentation"`` or ``"binary"``.

    Example::

        >>> check_kind("multilabel")
        'multilabel'
    """
    return known("model kind", kind, MODEL_KINDS)  # type: ignore[return-value]


def model_kind(output: object, labels: Tensor | None = None, *, output_key: OutputKey = None) -> str:
    """Tell from a model output (and, if given, the labels) whether it is classification, multi-label, segmentation or
    a binary classifier with one logit.

    The rule: scores (N, C, H, W) are segmentation, whatever the labels. Scores (N, 1) are binary (labels, if given,
    (N,) or (N, 1) of 0 and 1). Scores (N, C) are multi-label when the labels
    are multi-hot, an (N, C) tensor of 0 and 1 (bool, int or float); they are classification when the labels are
    (N,) class indices or when there are no labels. A multi-label model cannot be told from a classifier by its output
    alone (both give (N, C) logits): without labels, pass the kind explicitly (``kind="multilabel"``) where a
    function takes one.

    Args:
        output: the model output, or the scores themselves (see :func:`~lightning_cnnsee.explain.layers.select_output`).
        labels: optional labels of the batch: (N,) class indices or (N, C) multi-hot.
        output_key: where the scores are in ``output`` (see :func:`~lightning_cnnsee.explain.layers.select_output`).

    Example::

        >>> import torch
        >>> logits = torch.randn(2, 5)
        >>> model_kind(logits), model_kind(logits, torch.tensor([1, 4]))
        ('classification', 'classification')
        >>> model_kind(logits, torch.tensor([[0, 1, 1, 0, 0], [1, 0, 0, 0, 0]]))
        'multilabel'
        >>> model_kind({"out": torch.randn(2, 5, 8, 8)})
        'segmentation'
        >>> model_kind(torch.randn(4, 1), torch.tensor([1.0, 0.0, 1.0, 0.0]))
        'binary'
    """
    scores = select_output(output, output_key)
    shape = tuple(scores.shape)
    if scores.ndim == 4:
        return "segmentation"
    if scores.ndim != 2:
        raise ValueError(
            f"Cannot tell the model kind from scores of shape {shape}: expected (N, num_classes) for classification "
            "or multi-label, or (N, num_classes, H, W) for segmentation."
        )
    if shape[1] == 1:
        if labels is not None:
            labels = torch.as_tensor(labels)
            if labels.numel() != shape[0] or not bool(((labels == 0) | (labels == 1)).all()):
                raise ValueError(
                    f"labels of shape {tuple(labels.shape)} do not fit the one logit per image of a binary classifier "
                    f"(scores {shape}): expected ({shape[0]},) or ({shape[0]}, 1) labels of 0 and 1."
                )
        return "binary"
    if labels is None:
        return "classification"
    labels = torch.as_tensor(labels)
    if tuple(labels.shape) == shape[:1]:
        return "classification"
    if tuple(labels.shape) == shape:
        if not bool(((labels == 0) | (labels == 1)).all()):
            raise ValueError(
                f"labels of shape {tuple(labels.shape)} must be multi-hot (only 0 and 1) for a multi-label model; "
                f"got values {labels.unique()[:10].tolist()}."
            )
        return "multilabel"
    raise ValueError(
        f"labels of shape {tuple(labels.shape)} do not fit scores of shape {shape}: expected ({shape[0]},) class "
        f"indices (classification) or {shape} multi-hot labels (multi-label)."
    )


def class_indices(labels: Tensor | None, kind: str) -> Tensor | None:
    """A classifier's labels as (N,) class indices: one-hot (N, C) labels become their ``argmax``; other kinds' labels
    are returned as they are.

    Example::

        >>> class_indices(torch.tensor([[0, 1, 0], [1, 0, 0]]), "classification").tolist()
        [1, 0]
    """
    if kind == "binary" and labels is not None:
        return labels.reshape(-1).round().long()
    if kind == "classification" and labels is not None and labels.ndim == 2:
        return labels.argmax(dim=1)
    return labels


def _check_scores(scores: Tensor, kind: str) -> None:
    expected = 4 if kind == "segmentation" else 2
    if kind == "binary" and (scores.ndim != 2 or scores.shape[1] != 1):
        raise ValueError(
            f"kind='binary' expects scores of shape (N, 1), one logit per image, got {tuple(scores.shape)}."
        )
    if scores.ndim != expected:
        wanted = "(N, num_classes, H, W)" if expected == 4 else "(N, num_classes)"
        other = "'segmentation'" if scores.ndim == 4 else "'classification' or 'multilabel'"
        hint = f"; for these scores pass kind={other}" if scores.ndim in (2, 4) else ""
        raise ValueError(f"kind={kind!r} expects scores of shape {wanted}, got {tuple(scores.shape)}{hint}.")


def resolve_targets(targets: Targets, scores: Tensor, kind: str = "classification") -> Tensor:
    """Turn ``targets`` into one class index per image, a LongTensor (N,) on the scores' device.

    Args:
        targets: N class (or label) indices as a LongTensor or list, one int for every image, or ``None`` for each
            image's prediction: the top class (classification), the top-scoring label (multi-label), or the class
            predicted on the most pixels (segmentation).
        scores: the model's scores, (N, C) or (N, C, H, W); class indices must be below C.
        kind: one of :data:`MODEL_KINDS`.

    Example::

        >>> import torch
        >>> resolve_targets(None, torch.tensor([[0.1, 2.0], [3.0, -1.0]])).tolist()
        [1, 0]
        >>> resolve_targets(2, torch.zeros(2, 3, 4, 4), "segmentation").tolist()
        [2, 2]
    """
    _check_scores(scores, check_kind(kind))
    batch, num_classes = scores.shape[0], scores.shape[1]
    if targets is None:
        detached = scores.detach()
        if kind == "segmentation":
            predicted = detached.argmax(dim=1).flatten(1)
            counts = torch.zeros(batch, num_classes, dtype=torch.long, device=scores.device)
            counts.scatter_add_(1, predicted, torch.ones_like(predicted))
            resolved = counts.argmax(dim=1)
        elif is_binary(scores, kind):
            resolved = (detached[:, 0] > 0).long()  # the positive class where sigmoid(s) > 0.5
        else:
            resolved = detached.argmax(dim=1)
    elif isinstance(targets, int) and not isinstance(targets, bool):
        resolved = torch.full((batch,), targets, dtype=torch.long, device=scores.device)
    else:
        resolved = torch.as_tensor(targets, device=scores.device)
        if kind in ("classification", "binary") and scores.shape[1] == 1 and resolved.ndim == 2:
            resolved = resolved.reshape(-1).round()  # (N, 1) labels of a binary classifier
        if resolved.ndim > 1:
            hint = " (for multi-hot labels, list the pairs with multilabel_targets)" if resolved.ndim == 2 else ""
            raise ValueError(
                f"targets must be N class indices, one per image; got a tensor of shape {tuple(resolved.shape)}{hint}."
            )
        resolved = resolved.long().reshape(-1)
        if resolved.numel() != batch:
            raise ValueError(f"targets has {resolved.numel()} entries for a batch of {batch} images.")
    num_classes = 2 if is_binary(scores, kind) else num_classes
    if resolved.numel() and (resolved.min() < 0 or resolved.max() >= num_classes):
        raise ValueError(f"target class {resolved.tolist()} out of range: the model has {num_classes} classes.")
    return resolved


def class_scores(scores: Tensor, classes: Tensor) -> Tensor:
    """The logit of each image's class (classification) or label (multi-label): ``scores[n, classes[n]]``, shape (N,).

    Args:
        scores: (N, C) logits.
        classes: (N,) class or label indices.

    Example::

        >>> import torch
        >>> class_scores(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([1, 0])).tolist()
        [2.0, 3.0]
    """
    classes = classes.to(scores.device)
    if scores.shape[1] == 1:  # a binary classifier: s for class 1, -s for class 0 (BinaryClassifierOutputTarget)
        return torch.where(classes == 1, scores[:, 0], -scores[:, 0])
    return scores.gather(1, classes[:, None])[:, 0]


def is_binary(scores: Tensor, kind: str = "classification") -> bool:
    """Whether ``scores`` are the one logit per image of a binary classifier: kind ``"binary"``, or (N, 1) scores of a
    classifier."""
    return kind == "binary" or (kind == "classification" and scores.ndim == 2 and scores.shape[1] == 1)


def class_probabilities(logits: Tensor) -> Tensor:
    """The probability of each class, (N, C): a softmax over C logits; for the one logit of a binary classifier,
    ``[1 - sigmoid(s), sigmoid(s)]`` (N, 2).

    Example::

        >>> import torch
        >>> class_probabilities(torch.tensor([[0.0], [2.0]])).tolist()[1]  # doctest: +ELLIPSIS
        [0.119..., 0.880...]
    """
    logits = logits.float()
    if logits.ndim == 2 and logits.shape[1] == 1:
        positive = logits.sigmoid()
        return torch.cat([1 - positive, positive], dim=1)
    return logits.softmax(dim=-1)


def segmentation_masks(scores: Tensor, classes: Tensor) -> Tensor:
    """The pixels predicted as each image's class: ``argmax_k scores[n, k] == classes[n]``, a bool tensor (N, H, W).

    Args:
        scores: (N, C, H, W) segmentation scores.
        classes: (N,) class indices.

    Example::

        >>> import torch
        >>> segmentation_masks(torch.tensor([[[[2.0, 0.0]], [[1.0, 3.0]]]]), torch.tensor([0])).tolist()
        [[[True, False]]]
    """
    return scores.detach().argmax(dim=1) == classes.to(scores.device)[:, None, None]


def segmentation_scores(scores: Tensor, classes: Tensor, masks: Tensor | None = None) -> Tensor:
    """The sum of each image's class output over a mask of pixels (by default those predicted as that class), (N,).

    As pytorch-grad-cam's ``SemanticSegmentationTarget(category, mask)``: ``sum_ij scores[n, c_n, i, j] * mask_nij``.

    Args:
        scores: (N, C, H, W) segmentation scores.
        classes: (N,) class indices.
        masks: (N, H, W) masks (bool or float); ``None`` for :func:`segmentation_masks` of ``scores``.

    Example::

        >>> import torch
        >>> scores = torch.tensor([[[[2.0, 0.0]], [[1.0, 3.0]]]])
        >>> segmentation_scores(scores, torch.tensor([1])).tolist()
        [3.0]
    """
    if masks is None:
        masks = segmentation_masks(scores, classes)
    rows = torch.arange(scores.shape[0], device=scores.device)
    return (scores[rows, classes.to(scores.device)] * masks.to(scores.device, scores.dtype)).sum(dim=(1, 2))


def multilabel_targets(
    scores: Tensor, labels: Tensor | None = None, *, threshold: float = 0.5
) -> tuple[Tensor, Tensor]:
    """The (image, label) pairs worth a map in a multi-label batch: labels predicted (``sigmoid > threshold``) or true.

    Feed them to a CAM function as ``images[image_index]`` with ``targets=label_index``.

    Args:
        scores: (N, C) logits of a multi-label model (one sigmoid per label).
        labels: optional (N, C) multi-hot labels; their ones are added to the predicted labels.
        threshold: probability above which a label counts as predicted.

    Returns:
        ``(image_index, label_index)``, two LongTensors of equal length, sorted by image then label.

    Example::

        >>> import torch
        >>> logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, -2.0, -1.0]])
        >>> images, labels = multilabel_targets(logits, torch.tensor([[0, 1, 0], [0, 0, 1]]))
        >>> images.tolist(), labels.tolist()
        ([0, 0, 0, 1], [0, 1, 2, 2])
    """
    _check_scores(scores, "multilabel")
    chosen = torch.sigmoid(scores.detach().float()) > threshold
    if labels is not None:
        labels = torch.as_tensor(labels, device=scores.device)
        if labels.shape != scores.shape:
            raise ValueError(
                f"labels of shape {tuple(labels.shape)} must be multi-hot with the scores' shape {tuple(scores.shape)}."
            )
        chosen = chosen | (labels != 0)
    image_index, label_index = chosen.nonzero(as_tuple=True)
    return image_index, label_index


@dataclass
class Score:
    """The scalar per image that a CAM explains, built once from the unperturbed output by :func:`score_function`.

    Calling it on the scores of any forward pass whose rows are copies or perturbations of the original images gives
    one score per row; ``rows[i]`` names the original image of row i (default: row i is image i).
    """

    kind: str
    classes: Tensor
    masks: Tensor | None = None

    def __call__(self, scores: Tensor, rows: Tensor | None = None) -> Tensor:
        classes = self.classes if rows is None else self.classes[rows]
        if self.kind == "segmentation":
            masks = self.masks if rows is None else self.masks[rows]
            return segmentation_scores(scores, classes, masks)
        return class_scores(scores, classes)


def score_function(scores: Tensor, targets: Targets = None, kind: str | None = None) -> Score:
    """The score of each image's target on ``scores`` (the unperturbed output), usable on other forward passes too.

    Args:
        scores: the model's scores on the images, (N, C) or (N, C, H, W).
        targets: class or label indices, as in :func:`resolve_targets` (``None``: each image's prediction).
        kind: one of :data:`MODEL_KINDS`; ``None`` infers it with :func:`model_kind` (without labels: (N, C) is taken as
            classification, which scores a multi-label model's label the same way).

    Example::

        >>> import torch
        >>> logits = torch.tensor([[0.0, 5.0], [1.0, -1.0]])
        >>> score = score_function(logits, targets=None)
        >>> score.classes.tolist(), score(logits).tolist(), score(logits[[1, 1]], rows=torch.tensor([1, 1])).tolist()
        ([1, 0], [5.0, 1.0], [1.0, 1.0])
    """
    kind = model_kind(scores) if kind is None else check_kind(kind)
    classes = resolve_targets(targets, scores, kind)
    masks = segmentation_masks(scores, classes) if kind == "segmentation" else None
    return Score(kind, classes, masks)
