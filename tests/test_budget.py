"""The overhead budget's plans, on a clock the test sets: what each run may do within max_overhead."""

from __future__ import annotations

import pytest

from lightning_cnnsee.callback.budget import PLANNING_MARGIN, OverheadBudget, Plan


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def budget():
    clock = Clock()
    budget = OverheadBudget(0.05, clock=clock)
    budget.start()
    budget.record(maps_seconds=0.4, patterns_seconds=2.0)  # a complete run: 2.4 s, 3.0 s with the margin
    return budget, clock


def test_training_seconds_leave_out_what_cnnsee_spent(budget):
    budget, clock = budget
    clock.now = 100.0
    budget.add(10.0)
    assert budget.training_seconds() == 90.0
    assert budget.allowed() == pytest.approx(0.05 * 90.0 - 10.0)


def test_without_a_limit_every_run_is_complete():
    budget = OverheadBudget(None)
    assert budget.plan(maps=True, patterns=True) == Plan(run=True, maps=True, patterns=True)
    assert budget.plan(maps=False, patterns=True, final=True) == Plan(run=True, maps=False, patterns=True)


def test_patterns_only_when_a_complete_final_run_still_fits_afterwards(budget):
    budget, clock = budget
    # two complete runs (this one and the final) need 6 s: 5% of 120 s is just over
    clock.now = 119.0
    assert budget.plan(maps=True, patterns=True) == Plan(run=True, maps=True, patterns=False)
    clock.now = 121.0
    assert budget.plan(maps=True, patterns=True) == Plan(run=True, maps=True, patterns=True)


def test_maps_only_when_room_for_the_final_run_is_kept(budget):
    budget, clock = budget
    need = PLANNING_MARGIN * (0.4 + 2.4)  # these maps, then the final run's maps and patterns
    clock.now = need / 0.05 - 1.0
    assert budget.plan(maps=True, patterns=True) == Plan(run=False, maps=False, patterns=False)
    clock.now = need / 0.05 + 1.0
    assert budget.plan(maps=True, patterns=False) == Plan(run=True, maps=True, patterns=False)


def test_the_final_run_may_spend_all_that_is_left(budget):
    budget, clock = budget
    clock.now = 61.0  # 3.05 s allowed: one complete run with the margin, nothing kept for later
    assert budget.plan(maps=True, patterns=True, always=True, final=True) == Plan(run=True, maps=True, patterns=True)
    clock.now = 59.0
    assert budget.plan(maps=True, patterns=True, always=True, final=True) == Plan(run=True, maps=True, patterns=False)


def test_the_baseline_and_the_final_run_show_the_maps_even_over_budget(budget):
    budget, clock = budget
    budget.add(50.0)  # far over
    clock.now = 60.0
    assert budget.plan(maps=True, patterns=True, always=True) == Plan(run=True, maps=True, patterns=False)
    # a final run whose step already has its maps has nothing left to do
    nothing = Plan(run=False, maps=False, patterns=False)
    assert budget.plan(maps=False, patterns=True, always=True, final=True) == nothing
    assert budget.plan(maps=True, patterns=False) == Plan(run=False, maps=False, patterns=False)


def test_start_resets_what_was_spent_but_keeps_the_measured_costs(budget):
    budget, clock = budget
    budget.add(5.0)
    clock.now = 10.0
    budget.start()
    assert (budget.spent, budget.training_seconds()) == (0.0, 0.0)
    assert (budget.maps_seconds, budget.patterns_seconds) == (0.4, 2.0)
