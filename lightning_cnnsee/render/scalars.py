"""A run's numbers, tagged: the faithfulness of each map beside random maps, and each map's drift.

Example::

    >>> import torch
    >>> from lightning_cnnsee.explain.drift import DriftTracker
    >>> from lightning_cnnsee.run.results import Results
    >>> results = Results(cams_predicted={"layer4": torch.rand(2, 4, 4)})
    >>> tracker = DriftTracker()
    >>> run_scalars(results, tracker)  # the first run: nothing to compare with yet
    {}
    >>> results.cams_predicted["layer4"] = torch.rand(2, 4, 4)
    >>> sorted(run_scalars(results, tracker))
    ['cnnsee/drift/layer4/vs_previous', 'cnnsee/drift/layer4/vs_start']
"""

from __future__ import annotations

from collections.abc import Mapping

from lightning_cnnsee.explain.drift import DriftTracker, SanityCheck
from lightning_cnnsee.run.results import Results, explained_maps
from lightning_cnnsee.vocabulary.tags import make_tag

__all__ = ["failed_sanity_checks", "run_scalars"]


def run_scalars(
    results: Results,
    drift: DriftTracker | None,
    *,
    instance: str | None = None,
    localization: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, float]:
    """``{tag: value}`` of a run: the mean over the images of each faithfulness metric of each map, and of the same
    metric for random maps (``<metric>_random``); ``localization``, each map's localization numbers
    (:func:`~lightning_cnnsee.run.localization.localization_numbers` of ``results``: ``energy_inside``,
    ``object_area``, ``pointing_game`` with objects, the ``spot_*`` numbers always); with a ``drift`` tracker, each
    map's mean Spearman correlation with its map at the first run (``vs_start``) and at the previous run
    (``vs_previous``), after recording this run's."""
    numbers: dict[str, float] = {}
    for name, metrics in results.faithfulness.items():
        for metric, values in metrics.items():
            numbers[make_tag("faithfulness", f"{name}/{metric}", instance=instance)] = float(values.float().nanmean())
            reference = results.faithfulness_random[name][metric]
            numbers[make_tag("faithfulness", f"{name}/{metric}_random", instance=instance)] = float(
                reference.float().nanmean()
            )
    for name, metrics in (localization or {}).items():
        for metric, value in metrics.items():
            numbers[make_tag("localization", f"{name}/{metric}", instance=instance)] = value
    for name, maps in explained_maps(results).items() if drift is not None else ():
        for comparison, values in drift.update(name, maps).items():
            if values is not None:
                numbers[make_tag("drift", f"{name}/{comparison}", instance=instance)] = float(values.nanmean())
    return numbers


def failed_sanity_checks(drift: DriftTracker, *, final: bool, after_runs: int = 4) -> list[SanityCheck]:
    """The maps failing the model-randomization check, judged at the final run or once they have ``after_runs``
    runs (earlier, a map may not have had the time to move)."""
    failed = []
    for name in drift.keys():
        runs = drift.updates(name)
        if runs > 1 and (final or runs >= after_runs):
            verdict = drift.sanity_check(name)
            if not verdict.passed:
                failed.append(verdict)
    return failed
