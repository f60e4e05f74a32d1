"""Policy distributions: log-probabilities and entropies against the densities written out, the squashed Gaussian
against a numerical change of variables, KL against the closed form, and the head chosen for each action space."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from rl.distributions import (
    LOG_STD_MAX,
    CategoricalHead,
    GaussianHead,
    SquashedDiagonalGaussian,
    categorical,
    diagonal_gaussian,
    kl,
    policy_head,
)
from rl.errors import UserError


def t64(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def gaussian_log_density(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, std^2) summed over the last axis, written out."""
    return (-0.5 * ((x - mean) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)


def test_categorical_log_prob_entropy_and_mode_by_hand():
    logits = t64([[1.0, 2.0, 3.0], [0.0, 0.0, math.log(2.0)]])
    dist = categorical(logits)
    actions = torch.tensor([0, 2])
    # Row 0: log softmax = l - log(e + e^2 + e^3); row 1: probabilities 1/4, 1/4, 1/2.
    log_z = math.log(math.e + math.e**2 + math.e**3)
    torch.testing.assert_close(dist.log_prob(actions), t64([1.0 - log_z, math.log(0.5)]))
    assert dist.entropy()[1].item() == pytest.approx(-(2 * 0.25 * math.log(0.25) + 0.5 * math.log(0.5)))
    assert dist.mode.tolist() == [2, 2]


def test_categorical_samples_follow_the_probabilities():
    # Rows: p = (0.1, 0.2, 0.7); a zero-probability action in the middle and one at the end; uniform over 5.
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.7, 1e-30], [0.5, 0.0, 0.5, 0.0], [0.2, 0.2, 0.2, 0.2]]))
    logits[1, 1] = logits[1, 3] = -math.inf
    probs = torch.softmax(logits, dim=-1).double()
    n = 200_000
    torch.manual_seed(0)
    samples = categorical(logits.expand(n, 3, 4)).sample()  # (n, 3)
    assert samples.shape == (n, 3) and samples.dtype == torch.long
    frequencies = torch.stack([torch.bincount(samples[:, r], minlength=4) for r in range(3)]).double() / n
    assert frequencies[1, 1] == 0 and frequencies[1, 3] == 0 and frequencies[0, 3] == 0  # never drawn
    standard_error = torch.sqrt(probs * (1 - probs) / n).clamp(min=1e-12)
    assert ((frequencies - probs).abs() / standard_error).max() < 4.5  # within 4.5 standard errors everywhere
    assert categorical(logits).sample((7,)).shape == (7, 3)


def test_categorical_matches_torch_categorical():
    torch.manual_seed(1)
    logits = 3 * torch.randn(6, 5, dtype=torch.float64)
    ours, reference = categorical(logits), torch.distributions.Categorical(logits=logits)
    actions = torch.randint(5, (6,))
    torch.testing.assert_close(ours.log_prob(actions), reference.log_prob(actions))
    torch.testing.assert_close(
        ours.log_prob(actions[None].expand(2, 6)), reference.log_prob(actions[None].expand(2, 6))
    )
    torch.testing.assert_close(ours.entropy(), reference.entropy())
    torch.testing.assert_close(ours.probs, reference.probs)
    assert torch.equal(ours.mode, reference.mode)


def test_diagonal_gaussian_log_prob_and_entropy_by_hand():
    mean = t64([[0.0, 1.0], [2.0, -1.0]])
    log_std = t64([0.0, math.log(2.0)])  # state-independent, broadcast over the batch
    dist = diagonal_gaussian(mean, log_std)
    actions = t64([[0.5, 0.0], [1.0, 3.0]])
    std = t64([1.0, 2.0])
    torch.testing.assert_close(dist.log_prob(actions), gaussian_log_density(actions, mean, std))
    entropy = sum(0.5 * math.log(2 * math.pi * math.e * s**2) for s in (1.0, 2.0))
    torch.testing.assert_close(dist.entropy(), t64([entropy, entropy]))
    torch.testing.assert_close(dist.mode, mean)
    assert dist.sample().shape == (2, 2)


def squashed(mean, log_std, low=(-1.0, 0.0), high=(1.0, 4.0)) -> SquashedDiagonalGaussian:
    return SquashedDiagonalGaussian(t64(mean), t64(log_std), t64(low), t64(high))


def test_squashed_log_prob_is_a_numerical_change_of_variables():
    mean, log_std = [[0.3, -0.5]], [-0.2, 0.4]
    dist = squashed(mean, log_std)
    loc, scale = t64([0.0, 2.0]), t64([1.0, 2.0])
    u = t64([[0.7, -1.2]])
    actions = loc + scale * torch.tanh(u)
    # Density of a = f(u): N(u) / |f'(u)| per dimension, with f' by central differences.
    h = 1e-6
    derivative = (torch.tanh(u + h) - torch.tanh(u - h)) / (2 * h) * scale
    expected = gaussian_log_density(u, t64(mean), t64(log_std).exp()) - torch.log(derivative).sum(-1)
    torch.testing.assert_close(dist.log_prob(actions.clone()), expected, rtol=1e-7, atol=1e-7)


def test_squashed_density_integrates_to_one_over_the_bounds():
    dist = squashed([[0.4]], [-0.3], low=(-2.0,), high=(3.0,))
    grid = torch.linspace(-2.0, 3.0, 20_001, dtype=torch.float64)[1:-1, None]  # (K, 1)
    density = dist.log_prob(grid).exp()
    assert torch.trapezoid(density, grid[:, 0]).item() == pytest.approx(1.0, abs=1e-6)


def test_squashed_samples_mode_and_bound_actions():
    torch.manual_seed(0)
    dist = squashed([[3.0, -0.1]] * 500, [1.0, 1.0])
    samples = dist.sample()
    assert (samples[:, 0] > -1).all() and (samples[:, 0] < 1).all()
    assert (samples[:, 1] > 0).all() and (samples[:, 1] < 4).all()
    torch.testing.assert_close(dist.mode[0], t64([math.tanh(3.0), 2.0 + 2.0 * math.tanh(-0.1)]))
    # Actions stored on (or past) the bounds still get a finite log-probability.
    at_bounds = t64([[1.0, 0.0], [-1.5, 4.0]])
    assert torch.isfinite(squashed([[0.0, 0.0]] * 2, [0.0, 0.0]).log_prob(at_bounds)).all()
    # Entropy: the documented pre-squash Gaussian entropy.
    torch.testing.assert_close(dist.entropy(), dist.base_dist.entropy())


def test_squashed_rsample_log_prob_matches_recomputed():
    torch.manual_seed(1)
    dist = squashed([[0.1, 0.2]] * 4, [-1.0, -0.5])
    actions = dist.rsample()
    torch.testing.assert_close(dist.log_prob(actions), dist.log_prob(actions.clone()), rtol=1e-6, atol=1e-6)


def test_kl_of_gaussians_matches_closed_form():
    m1, m2 = t64([[0.0, 1.0]]), t64([[0.5, -1.0]])
    s1, s2 = t64([1.0, 0.5]), t64([2.0, 0.7])
    p, q = diagonal_gaussian(m1, s1.log()), diagonal_gaussian(m2, s2.log())
    closed_form = (torch.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5).sum(-1)
    torch.testing.assert_close(kl(p, q), closed_form)
    # Squashing both by the same map leaves the KL unchanged.
    sp, sq = squashed(m1.tolist(), s1.log().tolist()), squashed(m2.tolist(), s2.log().tolist())
    torch.testing.assert_close(kl(sp, sq), closed_form)


def test_kl_of_categoricals_by_hand_and_mixed_families_rejected():
    p, q = categorical(t64([[0.0, 0.0]])), categorical(t64([[0.0, math.log(3.0)]]))
    # p = (1/2, 1/2), q = (1/4, 3/4)
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert kl(p, q).item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="same family"):
        kl(p, diagonal_gaussian(t64([[0.0]]), t64([0.0])))


def test_policy_head_for_discrete_and_box_spaces():
    features = torch.zeros(5, 8)
    head = policy_head(gym.spaces.Discrete(4), 8, "ppo", "Env-v0")
    assert isinstance(head, CategoricalHead) and head(features).logits.shape == (5, 4)

    box = gym.spaces.Box(low=np.array([-1.0, 0.0], np.float32), high=np.array([1.0, 2.0], np.float32))
    gaussian = policy_head(box, 8, "ppo", "Env-v0", log_std_init=-0.5)
    assert isinstance(gaussian, GaussianHead)
    dist = gaussian(features)
    assert dist.sample().shape == (5, 2)
    torch.testing.assert_close(dist.base_dist.scale, torch.full((5, 2), math.exp(-0.5)))

    squashing = policy_head(box, 8, "sac", "Env-v0", state_dependent_std=True, squash=True)
    dist = squashing(features)
    assert isinstance(dist, SquashedDiagonalGaussian)
    torch.testing.assert_close(dist.scale, torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(dist.loc, torch.tensor([0.0, 1.0]))
    # Bounds come from the space, so only learnt parameters go into checkpoints.
    assert set(squashing.state_dict()) == {"mean.weight", "mean.bias", "log_std.weight", "log_std.bias"}
    # A state-dependent log-std is clamped.
    with torch.no_grad():
        squashing.log_std.bias.fill_(50.0)
    assert squashing(features).base_dist.base_dist.scale.max().item() == pytest.approx(math.exp(LOG_STD_MAX))


def test_policy_head_rejects_other_spaces():
    with pytest.raises(UserError, match="MultiDiscrete"):
        policy_head(gym.spaces.MultiDiscrete([2, 3]), 8, "ppo", "Env-v0")
    with pytest.raises(UserError, match="one-dimensional Box"):
        policy_head(gym.spaces.Box(-1, 1, shape=(2, 2)), 8, "ppo", "Env-v0")
    with pytest.raises(UserError, match="unbounded"):
        policy_head(gym.spaces.Box(-np.inf, np.inf, shape=(2,)), 8, "sac", "Env-v0", squash=True)
    with pytest.raises(UserError, match="starting at 0"):
        policy_head(gym.spaces.Discrete(3, start=1), 8, "ppo", "Env-v0")
