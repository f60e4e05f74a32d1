"""The sum tree behind prioritized replay: sums, minimum and prefix-sum lookup against NumPy, and draw frequencies."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rl.sum_tree import SumTree


@st.composite
def update_batches(draw: st.DrawFn) -> tuple[int, list[list[tuple[int, int]]]]:
    """A capacity and a few batches of (index, priority) updates, repeated indices included."""
    capacity = draw(st.integers(1, 70))
    update = st.tuples(st.integers(0, capacity - 1), st.integers(0, 50))
    return capacity, draw(st.lists(st.lists(update, max_size=20), min_size=1, max_size=6))


def apply(tree: SumTree, batch: list[tuple[int, int]]) -> None:
    tree.update(np.array([i for i, _ in batch], dtype=np.int64), np.array([p for _, p in batch], dtype=np.float64))


@settings(max_examples=50, deadline=None)
@given(update_batches())
def test_total_and_min_equal_numpy_after_arbitrary_updates(case: tuple[int, list[list[tuple[int, int]]]]) -> None:
    capacity, batches = case
    tree, priorities = SumTree(capacity), np.zeros(capacity)
    for batch in batches:
        apply(tree, batch)
        for i, p in batch:  # the last update of a repeated index wins
            priorities[i] = p
        # Integer priorities keep every sum exact, so the tree must agree to the last bit.
        assert tree.total == priorities.sum()
        np.testing.assert_array_equal(tree.get(np.arange(capacity)), priorities)
        positive = priorities[priorities > 0]
        assert tree.min == (positive.min() if positive.size else np.inf)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.0, 1e3), min_size=1, max_size=40))
def test_total_of_float_priorities(priorities: list[float]) -> None:
    tree = SumTree(len(priorities))
    tree.update(np.arange(len(priorities)), np.array(priorities))
    assert tree.total == pytest.approx(np.sum(priorities), rel=1e-12, abs=1e-12)


@settings(max_examples=50, deadline=None)
@given(update_batches(), st.lists(st.floats(0.0, 1.0, exclude_max=True), max_size=30))
def test_find_prefix_sum_agrees_with_searchsorted_over_cumsum(
    case: tuple[int, list[list[tuple[int, int]]]], fractions: list[float]
) -> None:
    capacity, batches = case
    tree = SumTree(capacity)
    for batch in batches:
        apply(tree, batch)
    priorities = tree.get(np.arange(capacity))
    if priorities.sum() == 0:
        return
    cumsum = np.cumsum(priorities)
    # Random points and the exact segment boundaries, where side="right" matters (and zero-priority rows sit).
    values = np.concatenate([np.array(fractions) * tree.total, [0.0], cumsum[cumsum < tree.total]])
    found = tree.find_prefix_sum(values)
    np.testing.assert_array_equal(found, np.searchsorted(cumsum, values, side="right"))
    assert np.all(priorities[found] > 0)


def test_draw_frequencies_are_proportional_to_priorities() -> None:
    priorities = np.array([1.0, 2.0, 3.0, 4.0])
    tree = SumTree(4)
    tree.update(np.arange(4), priorities)
    draws = 40_000
    found = tree.find_prefix_sum(np.random.default_rng(0).random(draws) * tree.total)
    frequencies = np.bincount(found, minlength=4) / draws
    expected = priorities / priorities.sum()
    standard_errors = np.sqrt(expected * (1 - expected) / draws)
    assert np.all(np.abs(frequencies - expected) < 4 * standard_errors)


def test_values_at_the_total_land_on_the_last_positive_priority() -> None:
    # Padding leaves (capacity 5 -> 8 leaves) and unwritten rows hold 0 and must never come back, even for a value
    # pushed past the total by rounding.
    tree = SumTree(5)
    tree.update(np.array([0, 1]), np.array([0.1, 0.2]))
    found = tree.find_prefix_sum(np.array([tree.total, np.nextafter(tree.total, np.inf), 0.3000000001]))
    np.testing.assert_array_equal(found, [1, 1, 1])


def test_capacity_one() -> None:
    tree = SumTree(1)
    tree.update(np.array([0]), np.array([2.5]))
    assert tree.total == 2.5 and tree.min == 2.5
    np.testing.assert_array_equal(tree.find_prefix_sum(np.array([0.0, 2.4])), [0, 0])


def test_bad_input_is_a_clear_value_error() -> None:
    tree = SumTree(4)
    with pytest.raises(ValueError, match="every priority is 0"):
        tree.find_prefix_sum(np.array([0.0]))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        tree.update(np.array([4]), np.array([1.0]))
    with pytest.raises(ValueError, match="finite and >= 0"):
        tree.update(np.array([0]), np.array([-1.0]))
    with pytest.raises(ValueError, match="one per index"):
        tree.update(np.array([0, 1]), np.array([1.0]))
    with pytest.raises(ValueError, match="capacity"):
        SumTree(0)
