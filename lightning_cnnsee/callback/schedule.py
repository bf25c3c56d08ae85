"""When CNNSee runs, and with what: the maps and the patterns, within the :class:`~budget.OverheadBudget`.

Runs come at four points: a baseline before the first optimizer step, every ``every_n_epochs`` epochs, every
``every_n_steps`` steps, and a final run when training ends. Each step is shown once (an epoch end that falls on
a step already shown adds nothing, except that the final run may still add the patterns). The filter and class
patterns come every ``filters_every_n_runs`` runs and always in the final run; the budget then plans what fits.

Pure Python, no Lightning, no torch.

Example::

    >>> from lightning_cnnsee.callback.schedule import Schedule
    >>> schedule = Schedule(every_n_epochs=1, every_n_steps=None, filters_every_n_runs=2, max_overhead=None)
    >>> schedule.wanted(step=0, reason="baseline", patterns=True)
    (True, True)
    >>> schedule.started(0, maps=True, patterns=True)
    >>> schedule.wanted(step=0, reason="epoch", patterns=True)  # step 0 is shown already
    >>> schedule.wanted(step=10, reason="epoch", patterns=True)  # the second run: no patterns
    (True, False)
"""

from __future__ import annotations

from typing import Any

from lightning_cnnsee.callback.budget import OverheadBudget, Plan

__all__ = ["ALWAYS", "Schedule"]

ALWAYS = ("baseline", "final")


class Schedule:
    """What has run so far, and what the next run should hold.

    Args:
        every_n_epochs: a run every n-th training epoch (``None``: never by epochs).
        every_n_steps: a run every n optimizer steps (``None``: never by steps).
        filters_every_n_runs: patterns in every n-th run (and the final one).
        max_overhead: the budget's fraction of training time (``None``: no limit).
    """

    def __init__(
        self,
        every_n_epochs: int | None,
        every_n_steps: int | None,
        filters_every_n_runs: int,
        max_overhead: float | None,
    ) -> None:
        self.every_n_epochs = every_n_epochs
        self.every_n_steps = every_n_steps
        self.filters_every_n_runs = filters_every_n_runs
        self.budget = OverheadBudget(max_overhead)
        self.runs = 0
        self.last_step: int | None = None
        self.last_patterns_step: int | None = None
        self.deferred = 0

    def due_after_step(self, step: int) -> bool:
        return bool(self.every_n_steps) and step > 0 and step % self.every_n_steps == 0  # type: ignore[operator]

    def due_after_epoch(self, epoch: int) -> bool:
        return bool(self.every_n_epochs) and (epoch + 1) % self.every_n_epochs == 0  # type: ignore[operator]

    def wanted(self, step: int, reason: str, patterns: bool) -> tuple[bool, bool] | None:
        """``(maps, patterns)`` a run at ``step`` would add, or ``None`` when it would add nothing.

        ``patterns`` says whether the options ask for patterns at all.
        """
        maps = self.last_step != step
        if not maps and reason != "final":
            return None
        patterns = (
            patterns
            and self.last_patterns_step != step
            and (reason == "final" or self.runs % self.filters_every_n_runs == 0)
        )
        return (maps, patterns) if maps or patterns else None

    def plan(self, reason: str, maps: bool, patterns: bool) -> Plan:
        """The fullest run that fits the budget (the baseline and the final run happen anyway, with the maps)."""
        return self.budget.plan(maps=maps, patterns=patterns, always=reason in ALWAYS, final=reason == "final")

    def deferring(self) -> bool:
        """Count a deferred scheduled run; true the first time (to say so once)."""
        self.deferred += 1
        return self.deferred == 1

    def started(self, step: int, *, maps: bool, patterns: bool) -> None:
        """A run at ``step`` is starting with ``maps`` and ``patterns``."""
        if maps:
            self.last_step = step
            self.runs += 1
        if patterns:
            self.last_patterns_step = step

    def finished(self, seconds: float, *, maps: bool, patterns_seconds: float | None) -> None:
        """A run took ``seconds``, of which ``patterns_seconds`` for the patterns (``None``: it had none)."""
        self.budget.add(seconds)
        maps_seconds = max(seconds - (patterns_seconds or 0.0), 0.0) if maps else None
        self.budget.record(maps_seconds=maps_seconds, patterns_seconds=patterns_seconds)

    def overhead(self) -> float | None:
        """CNNSee's seconds over training's, once training has lasted a second (``None`` before)."""
        training = self.budget.training_seconds()
        return self.budget.spent / training if training >= 1.0 else None

    def state_dict(self) -> dict[str, Any]:
        return {"runs": self.runs, "last_step": self.last_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.runs = int(state.get("runs", 0))
        self.last_step = state.get("last_step")
