"""Returns and advantages: short sequences by hand, random rollouts with terminations and truncations against plain
Python loops, GAE's lambda = 0 and lambda = 1 limits, the bootstrap rule, and the group baselines of GRPO and RLOO."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rl.advantages import (
    discounted_returns,
    gae,
    group_relative_advantages,
    leave_one_out_advantages,
    leave_one_out_baseline,
    normalize,
    td_errors,
)

FAST = settings(max_examples=40, deadline=None)
ENDS = ("none", "none", "none", "terminated", "truncated")


def t64(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


@st.composite
def rollouts(draw, consistent_values: bool = False):
    """A random (T, N) rollout: rewards, V(obs), V(next_obs), terminated, truncated.

    With consistent_values, V(next_obs[t]) = V(obs[t + 1]) wherever the episode goes on, as one critic gives.
    """
    steps, envs = draw(st.integers(1, 7)), draw(st.integers(1, 3))
    floats = st.floats(-5, 5, allow_nan=False, width=32)
    cells = steps * envs
    rewards = t64(draw(st.lists(floats, min_size=cells, max_size=cells))).reshape(steps, envs)
    values = t64(draw(st.lists(floats, min_size=cells, max_size=cells))).reshape(steps, envs)
    next_values = t64(draw(st.lists(floats, min_size=cells, max_size=cells))).reshape(steps, envs)
    ends = draw(st.lists(st.sampled_from(ENDS), min_size=cells, max_size=cells))
    terminated = torch.tensor([e == "terminated" for e in ends]).reshape(steps, envs)
    truncated = torch.tensor([e == "truncated" for e in ends]).reshape(steps, envs)
    if consistent_values:
        goes_on = ~(terminated | truncated)
        next_values[:-1] = torch.where(goes_on[:-1], values[1:], next_values[:-1])
    return rewards, values, next_values, terminated, truncated


def reference_returns(rewards, terminated, truncated, bootstrap_values, gamma):
    """Forward loop: from each step, add discounted rewards until the episode or the rollout ends."""
    steps, envs = rewards.shape
    out = torch.zeros(steps, envs, dtype=torch.float64)
    for n in range(envs):
        for t in range(steps):
            total, discount = 0.0, 1.0
            for k in range(t, steps):
                total += discount * float(rewards[k, n])
                if terminated[k, n]:
                    break
                if truncated[k, n] or k == steps - 1:
                    total += discount * gamma * float(bootstrap_values[k, n])
                    break
                discount *= gamma
            out[t, n] = total
    return out


def reference_gae(rewards, values, next_values, terminated, truncated, gamma, lam):
    """Forward loop: A[t] = sum over k from t to the episode's (or rollout's) end of (gamma lam)^(k - t) delta[k]."""
    steps, envs = rewards.shape
    out = torch.zeros(steps, envs, dtype=torch.float64)
    for n in range(envs):
        for t in range(steps):
            total, weight = 0.0, 1.0
            for k in range(t, steps):
                not_terminal = 0.0 if terminated[k, n] else 1.0
                delta = float(rewards[k, n]) + gamma * not_terminal * float(next_values[k, n]) - float(values[k, n])
                total += weight * delta
                if terminated[k, n] or truncated[k, n]:
                    break
                weight *= gamma * lam
            out[t, n] = total
    return out


def test_discounted_returns_by_hand():
    # env 0: r = 1, 2, 3 with no end: bootstraps from V(next_obs[2]) = 10 at the end of the rollout.
    # env 1: terminates at step 0 (no bootstrap), then truncated at step 2 (bootstraps from 20).
    rewards = t64([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    terminated = torch.tensor([[False, True], [False, False], [False, False]])
    truncated = torch.tensor([[False, False], [False, False], [False, True]])
    bootstrap = t64([[100.0, 100.0], [100.0, 100.0], [10.0, 20.0]])
    returns = discounted_returns(rewards, terminated, truncated, bootstrap, gamma=0.5)
    env0 = [1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 10, 2 + 0.5 * 3 + 0.25 * 10, 3 + 0.5 * 10]
    env1 = [1.0, 2 + 0.5 * 3 + 0.25 * 20, 3 + 0.5 * 20]
    torch.testing.assert_close(returns, t64([env0, env1]).T)


def test_gae_by_hand():
    # One env, T = 2, gamma = 0.5, lambda = 0.5: delta0 = 1 + 0.5 * 2 - 1 = 1, delta1 = 1 + 0.5 * 4 - 2 = 1.
    rewards, values, next_values = t64([[1.0], [1.0]]), t64([[1.0], [2.0]]), t64([[2.0], [4.0]])
    no = torch.zeros(2, 1, dtype=torch.bool)
    advantages, returns = gae(rewards, values, next_values, no, no, gamma=0.5, gae_lambda=0.5)
    torch.testing.assert_close(advantages, t64([[1 + 0.25 * 1], [1.0]]))
    torch.testing.assert_close(returns, advantages + values)
    # Terminated at step 0: delta0 = 1 - 1 = 0 and the recursion is cut, so A0 = 0.
    terminated = torch.tensor([[True], [False]])
    advantages, _ = gae(rewards, values, next_values, terminated, no, gamma=0.5, gae_lambda=0.5)
    torch.testing.assert_close(advantages, t64([[0.0], [1.0]]))


def test_truncation_bootstraps_and_termination_does_not():
    rewards, values, next_values = t64([[1.0]]), t64([[0.0]]), t64([[8.0]])
    yes, no = torch.ones(1, 1, dtype=torch.bool), torch.zeros(1, 1, dtype=torch.bool)
    assert discounted_returns(rewards, yes, no, next_values, 0.9).item() == pytest.approx(1.0)
    assert discounted_returns(rewards, no, yes, next_values, 0.9).item() == pytest.approx(1.0 + 0.9 * 8.0)
    assert gae(rewards, values, next_values, yes, no, 0.9, 0.95).returns.item() == pytest.approx(1.0)
    assert gae(rewards, values, next_values, no, yes, 0.9, 0.95).returns.item() == pytest.approx(1.0 + 0.9 * 8.0)
    # Both flags set (time limit on a terminal step): termination wins.
    assert discounted_returns(rewards, yes, yes, next_values, 0.9).item() == pytest.approx(1.0)


@FAST
@given(rollouts(), st.floats(0.0, 1.0))
def test_discounted_returns_match_reference_loop(rollout, gamma):
    rewards, _, next_values, terminated, truncated = rollout
    expected = reference_returns(rewards, terminated, truncated, next_values, gamma)
    torch.testing.assert_close(discounted_returns(rewards, terminated, truncated, next_values, gamma), expected)


@FAST
@given(rollouts(), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_gae_matches_reference_loop(rollout, gamma, lam):
    rewards, values, next_values, terminated, truncated = rollout
    advantages, returns = gae(rewards, values, next_values, terminated, truncated, gamma, lam)
    torch.testing.assert_close(
        advantages, reference_gae(rewards, values, next_values, terminated, truncated, gamma, lam)
    )
    torch.testing.assert_close(returns, advantages + values)


@FAST
@given(rollouts(consistent_values=True), st.floats(0.0, 1.0))
def test_gae_lambda_one_is_monte_carlo_advantage_with_bootstrapping(rollout, gamma):
    rewards, values, next_values, terminated, truncated = rollout
    advantages, returns = gae(rewards, values, next_values, terminated, truncated, gamma, gae_lambda=1.0)
    mc_returns = discounted_returns(rewards, terminated, truncated, next_values, gamma)
    torch.testing.assert_close(advantages, mc_returns - values)
    torch.testing.assert_close(returns, mc_returns)


@FAST
@given(rollouts(), st.floats(0.0, 1.0))
def test_gae_lambda_zero_is_one_step_td_error(rollout, gamma):
    rewards, values, next_values, terminated, truncated = rollout
    advantages, _ = gae(rewards, values, next_values, terminated, truncated, gamma, gae_lambda=0.0)
    torch.testing.assert_close(advantages, td_errors(rewards, values, next_values, terminated, gamma))


def test_td_errors_by_hand():
    deltas = td_errors(t64([1.0, 1.0]), t64([2.0, 2.0]), t64([4.0, 4.0]), torch.tensor([False, True]), gamma=0.5)
    torch.testing.assert_close(deltas, t64([1 + 2 - 2, 1 - 2]))


def test_group_relative_advantages_by_hand():
    rewards = t64([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0]])
    # Group 0: mean 0.5, sample std sqrt(4 * 0.25 / 3); group 1: mean 0.75, sample std sqrt(0.75 / 3) = 0.5.
    s0 = 0.5 / math.sqrt(1 / 3)
    expected = t64([[s0, -s0, -s0, s0], [0.5, 0.5, 0.5, -1.5]])
    torch.testing.assert_close(group_relative_advantages(rewards, normalize_std=True, eps=0.0), expected)
    centred = t64([[0.5, -0.5, -0.5, 0.5], [0.25, 0.25, 0.25, -0.75]])
    torch.testing.assert_close(group_relative_advantages(rewards, normalize_std=False), centred)
    # All-equal groups carry no signal, and eps keeps them finite.
    assert torch.equal(group_relative_advantages(torch.ones(1, 4)), torch.zeros(1, 4))


def test_leave_one_out_by_hand():
    rewards = t64([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]])
    torch.testing.assert_close(leave_one_out_baseline(rewards), t64([[2.5, 2.0, 1.5], [3.0, 3.0, 0.0]]))
    torch.testing.assert_close(leave_one_out_advantages(rewards), t64([[-1.5, 0.0, 1.5], [-3.0, -3.0, 6.0]]))


def test_group_baselines_need_two_samples_per_prompt():
    for fn in (group_relative_advantages, leave_one_out_baseline):
        with pytest.raises(ValueError, match="G >= 2"):
            fn(torch.ones(3, 1))


def test_normalize_by_hand():
    x = t64([1.0, 2.0, 3.0, 4.0])
    std = math.sqrt(5 / 3)  # sample std of 1..4
    torch.testing.assert_close(normalize(x, eps=0.0), (x - 2.5) / std)
    # Masked: statistics of 1 and 3 only (mean 2, sample std sqrt(2)); masked-out entries become 0.
    mask = torch.tensor([True, False, True, False])
    torch.testing.assert_close(normalize(x, eps=0.0, mask=mask), t64([-1 / math.sqrt(2), 0.0, 1 / math.sqrt(2), 0.0]))
