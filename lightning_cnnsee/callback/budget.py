"""How much CNNSee may spend, and what each run may do within that.

The budget is a fraction of training time (``max_overhead``). Everything CNNSee does counts against it: the
baseline and the final run, which always happen, and the estimate of the pattern cost. Before each run the
budget plans it from the last measured costs, with a margin:

- the filter and class patterns (the costly part) go into a run when a complete final run (maps and patterns)
  still fits afterwards, so the end of training is not left without them;
- otherwise the run shows the maps only (Grad-CAM, activations), if they fit;
- otherwise a scheduled run is deferred; the baseline and the final run still show the maps.

Pure Python, no Lightning: the clock can be replaced to test the plans.

Example::

    >>> clock = iter([0.0, 100.0, 100.0]).__next__  # training started at 0 s; 100 s later:
    >>> budget = OverheadBudget(0.05, clock=clock)
    >>> budget.start()
    >>> budget.record(maps_seconds=0.5, patterns_seconds=2.0)  # the last run: 0.5 s maps, 2 s patterns
    >>> budget.allowed()  # 5% of 100 s
    5.0
    >>> # maps and patterns now and in the final run: (0.5 + 2) * 2 * 1.25 = 6.25 s, too much
    >>> budget.plan(maps=True, patterns=True)
    Plan(run=True, maps=True, patterns=False)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["OverheadBudget", "PLANNING_MARGIN", "Plan"]

#: Costs vary from run to run (other processes, allocator, caches): plans assume a quarter more than measured.
PLANNING_MARGIN = 1.25


@dataclass(frozen=True)
class Plan:
    """What a run does: ``run`` at all, show the ``maps`` (Grad-CAM, activations), optimize the ``patterns``."""

    run: bool
    maps: bool
    patterns: bool


class OverheadBudget:
    """CNNSee's seconds against ``max_overhead`` times the seconds of training (``None``: no limit).

    Args:
        max_overhead: the most CNNSee may cost, as a fraction of training time.
        clock: seconds, monotonic (``time.perf_counter``).
    """

    def __init__(self, max_overhead: float | None, clock: Callable[[], float] = time.perf_counter) -> None:
        self.max_overhead = max_overhead
        self.clock = clock
        self.started: float | None = None
        self.spent = 0.0
        self.maps_seconds: float | None = None  # the maps of the last run that showed them
        self.patterns_seconds: float | None = None  # the patterns of the last run that had them, or the estimate

    def start(self) -> None:
        """Training starts now: nothing spent yet (the measured costs are kept)."""
        self.started = self.clock()
        self.spent = 0.0

    def training_seconds(self) -> float:
        """Seconds since :meth:`start`, less what CNNSee spent."""
        if self.started is None:
            return 0.0
        return max(self.clock() - self.started - self.spent, 0.0)

    def allowed(self) -> float:
        """Seconds CNNSee may still spend now (negative when over)."""
        if self.max_overhead is None:
            return float("inf")
        return self.max_overhead * self.training_seconds() - self.spent

    def add(self, seconds: float) -> None:
        """Count ``seconds`` of CNNSee's work."""
        self.spent += seconds

    def record(self, *, maps_seconds: float | None = None, patterns_seconds: float | None = None) -> None:
        """Remember what the maps and the patterns of a run cost, for the plans of the next runs."""
        if maps_seconds is not None:
            self.maps_seconds = maps_seconds
        if patterns_seconds is not None:
            self.patterns_seconds = patterns_seconds

    def plan(self, *, maps: bool, patterns: bool, always: bool = False, final: bool = False) -> Plan:
        """The fullest run that fits.

        Args:
            maps: the run would show the maps (false when this step already has them).
            patterns: the run would optimize the patterns (their cost must be known: :meth:`record`).
            always: the run happens even over budget (the baseline, the final run), with the maps only.
            final: nothing comes after this run, so no room is kept for the final run's patterns.
        """
        if self.max_overhead is None:
            return Plan(run=True, maps=maps, patterns=patterns)
        maps_cost = PLANNING_MARGIN * (self.maps_seconds or 0.0)
        patterns_cost = PLANNING_MARGIN * (self.patterns_seconds or 0.0)
        keep = 0.0 if final else maps_cost + patterns_cost  # room for a complete final run, after this one
        maps_cost = maps_cost if maps else 0.0
        left = self.allowed()
        if patterns and maps_cost + patterns_cost + keep <= left:
            return Plan(run=True, maps=maps, patterns=True)
        if always:
            return Plan(run=maps, maps=maps, patterns=False)
        if maps and maps_cost + keep <= left:
            return Plan(run=True, maps=True, patterns=False)
        return Plan(run=False, maps=False, patterns=False)
