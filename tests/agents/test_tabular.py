"""The tabular agents' action selection: exact probabilities by hand, and the same draws as NumPy's reference calls,
so the fast Python versions leave every seeded result as it was."""

from __future__ import annotations

import numpy as np
import pytest

from agents import td
from agents.tabular import cumulative_policy, epsilon_greedy_action, epsilon_greedy_probs, sample_action
from rl.errors import UserError


def test_epsilon_greedy_probs_by_hand():
    # A = 4, epsilon = 0.2: each action gets 0.05; the two tied greedy actions share the other 0.8.
    probs = epsilon_greedy_probs([1.0, 3.0, 3.0, 0.0], 0.2)
    np.testing.assert_allclose(probs, [0.05, 0.45, 0.45, 0.05])
    assert td.expected_q([1.0, 3.0, 3.0, 0.0], probs) == pytest.approx(0.05 + 1.35 + 1.35)
    assert epsilon_greedy_probs([2.0, 1.0], 0.0) == [1.0, 0.0]
    assert td.max_q(np.array([-1.0, 4.0, 2.0])) == 4.0


def reference_epsilon_greedy_action(q_row: np.ndarray, epsilon: float, rng: np.random.Generator) -> int:
    """The NumPy formulation: flatnonzero for the maximisers, rng.choice among ties."""
    if rng.random() < epsilon:
        return int(rng.integers(len(q_row)))
    best = np.flatnonzero(q_row == q_row.max())
    return int(best[0]) if len(best) == 1 else int(rng.choice(best))


@pytest.mark.parametrize("epsilon", [0.0, 0.3, 1.0])
def test_epsilon_greedy_action_draws_what_the_numpy_formulation_draws(epsilon):
    rows = np.random.default_rng(0).integers(0, 3, size=(2_000, 5)).astype(float)  # values 0-2: many ties
    fast, reference = np.random.default_rng(7), np.random.default_rng(7)
    actions = [epsilon_greedy_action(row, epsilon, fast) for row in rows]
    assert actions == [reference_epsilon_greedy_action(row, epsilon, reference) for row in rows]
    assert fast.random() == reference.random()  # and both generators end in the same state
    assert len(set(actions)) == 5


def test_sample_action_draws_what_rng_choice_draws():
    policies = np.array(
        [
            [0.2, 0.2, 0.2, 0.2, 0.2],
            [0.0, 1.0, 0.0, 0.0, 0.0],
            [0.5, 0.0, 0.0, 0.0, 0.5],
            [0.1, 0.3, 0.05, 0.25, 0.3],
        ]
    )
    cumulative = cumulative_policy(policies)
    fast, reference = np.random.default_rng(3), np.random.default_rng(3)
    states = np.random.default_rng(1).integers(len(policies), size=4_000)
    actions = [sample_action(cumulative[s], fast) for s in states]
    assert actions == [int(reference.choice(5, p=policies[s])) for s in states]
    assert fast.random() == reference.random()
    # Zero-probability actions are never drawn; the others appear about as often as pi says.
    for s, policy in enumerate(policies):
        drawn = np.bincount([a for a, state in zip(actions, states, strict=True) if state == s], minlength=5)
        assert np.all(drawn[policy == 0.0] == 0)
        np.testing.assert_allclose(drawn / drawn.sum(), policy, atol=0.05)


def test_action_values_gone_nan_are_a_user_error_not_an_empty_choice():
    with pytest.raises(UserError, match=r"the action values became NaN \(\[nan, 1.0\]\)"):
        epsilon_greedy_action(np.array([np.nan, 1.0]), 0.0, np.random.default_rng(0))
