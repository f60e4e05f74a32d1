"""Policy-gradient losses by hand: masked token and sequence means, REINFORCE, importance weights, PPO's clipped
surrogate and where its gradient vanishes, value clipping, and the k1 / k3 KL estimators."""

from __future__ import annotations

import math

import pytest
import torch

from rl.pg_losses import (
    clipped_surrogate_loss,
    entropy_bonus,
    importance_weights,
    kl_k1,
    kl_k3,
    masked_mean,
    policy_gradient_loss,
    sequence_mean,
    surrogate_loss,
    token_mean,
    value_loss,
)


def t64(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


X = t64([[1.0, 2.0, 3.0], [4.0, 50.0, 60.0]])
MASK = torch.tensor([[1, 1, 1], [1, 0, 0]])


def test_masked_means_by_hand():
    assert masked_mean(X).item() == pytest.approx(120 / 6)
    assert masked_mean(X, MASK).item() == pytest.approx((1 + 2 + 3 + 4) / 4)
    torch.testing.assert_close(masked_mean(X, MASK, dim=1), t64([2.0, 4.0]))
    torch.testing.assert_close(masked_mean(X, MASK.bool(), dim=0), t64([2.5, 2.0, 3.0]))
    assert token_mean(X, MASK).item() == pytest.approx(2.5)  # every real token weighs the same
    assert sequence_mean(X, MASK).item() == pytest.approx((2.0 + 4.0) / 2)  # every sequence weighs the same
    assert sequence_mean(X).item() == pytest.approx((2.0 + 38.0) / 2)


def test_policy_gradient_loss_value_and_gradient():
    log_probs = t64([-1.0, -2.0, -0.5]).requires_grad_()
    advantages = t64([2.0, -1.0, 0.5]).requires_grad_()
    loss = policy_gradient_loss(log_probs, advantages)
    assert loss.item() == pytest.approx(-(-2.0 + 2.0 - 0.25) / 3)
    loss.backward()
    torch.testing.assert_close(log_probs.grad, -advantages.detach() / 3)
    assert advantages.grad is None  # a critic behind the advantages gets no gradient from the actor loss


def test_policy_gradient_loss_with_sequence_advantages_and_mask():
    log_probs = t64([[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]])
    advantages = t64([1.0, -2.0])[:, None]  # one advantage per sequence, broadcast over its tokens
    expected_token = -(-1 - 2 - 3 + 8) / 4
    assert policy_gradient_loss(log_probs, advantages, MASK).item() == pytest.approx(expected_token)
    expected_sequence = -((-6.0 / 3) + 8.0) / 2
    assert policy_gradient_loss(log_probs, advantages, MASK, sequence_mean).item() == pytest.approx(expected_sequence)


def test_importance_weights_on_and_off_policy():
    log_probs = t64([-1.0, -0.2, -3.0])
    torch.testing.assert_close(importance_weights(log_probs, log_probs.clone()), torch.ones(3, dtype=torch.float64))
    old = t64([-1.0 - math.log(2.0), -0.2 - math.log(4.0), -3.0 + math.log(2.0)])
    torch.testing.assert_close(importance_weights(log_probs, old), t64([2.0, 4.0, 0.5]))
    torch.testing.assert_close(importance_weights(log_probs, old, clip=3.0), t64([2.0, 3.0, 0.5]))


def test_clipped_surrogate_value_and_diagnostics_by_hand():
    ratios = t64([1.5, 0.5, 1.1, 0.7])
    advantages = t64([1.0, 1.0, -2.0, -1.0])
    old = t64([-1.0, -1.0, -1.0, -1.0])
    out = clipped_surrogate_loss(old + ratios.log(), old, advantages, clip_range=0.2)
    # min(r A, clip(r) A): 1.2 (clipped), 0.5, -2.2, -0.8 (clipped)
    assert out.loss.item() == pytest.approx(-(1.2 + 0.5 - 2.2 - 0.8) / 4)
    assert out.clip_fraction.item() == pytest.approx(3 / 4)  # 1.5, 0.5 and 0.7 lie outside [0.8, 1.2]
    k3 = [(r - 1) - math.log(r) for r in ratios.tolist()]
    assert out.approx_kl.item() == pytest.approx(sum(k3) / 4)


def test_clipped_surrogate_gradient_vanishes_only_where_the_clip_forbids():
    # Per sample: (ratio, advantage). Outside the range on the forbidden side: (1.5, +), (0.5, -).
    # Outside on the allowed side, the gradient still pulls back: (1.5, -), (0.5, +). Inside: (1.1, +), (0.9, -).
    ratios = t64([1.5, 0.5, 1.5, 0.5, 1.1, 0.9])
    advantages = t64([1.0, -1.0, -1.0, 1.0, 1.0, -1.0])
    old = torch.zeros(6, dtype=torch.float64)
    log_probs = ratios.log().requires_grad_()
    clipped_surrogate_loss(log_probs, old, advantages, clip_range=0.2).loss.backward()
    # d/dlogp of -(ratio * A) / 6 is -ratio * A / 6 where unclipped.
    expected = torch.where(torch.arange(6) < 2, 0.0, -ratios * advantages / 6)
    torch.testing.assert_close(log_probs.grad, expected)


def test_surrogate_gradient_equals_policy_gradient_on_policy():
    log_probs = t64([-1.0, -0.3, -2.0]).requires_grad_()
    advantages = t64([0.5, -1.0, 2.0])
    surrogate_loss(log_probs, log_probs.detach().clone(), advantages).backward()
    surrogate_grad = log_probs.grad.clone()
    log_probs.grad = None
    policy_gradient_loss(log_probs, advantages).backward()
    torch.testing.assert_close(surrogate_grad, log_probs.grad)
    old = log_probs.detach() + math.log(2.0)
    assert surrogate_loss(log_probs, old, advantages).item() == pytest.approx(-(0.5 - 1.0 + 2.0) * 0.5 / 3)


def test_value_loss_by_hand_and_clipped():
    values, returns = t64([1.0, 3.0]), t64([2.0, 0.0])
    assert value_loss(values, returns).item() == pytest.approx(0.5 * (1 + 9) / 2)
    old_values = t64([0.0, 2.0])
    # Clipped values: 0 + clip(1, -0.5, 0.5) = 0.5 -> (0.5 - 2)^2 = 2.25 > 1; 2 + 0.5 = 2.5 -> 6.25 < 9.
    clipped = value_loss(values, returns, old_values=old_values, clip_range=0.5)
    assert clipped.item() == pytest.approx(0.5 * (2.25 + 9) / 2)
    with pytest.raises(ValueError, match="both"):
        value_loss(values, returns, old_values=old_values)
    masked = value_loss(t64([[1.0, 7.0]]), t64([[3.0, 0.0]]), mask=torch.tensor([[1, 0]]))
    assert masked.item() == pytest.approx(0.5 * 4)


def test_kl_estimators_by_hand_and_in_expectation():
    log_p, log_q = t64([math.log(0.5), math.log(0.2)]), t64([math.log(0.25), math.log(0.6)])
    torch.testing.assert_close(kl_k1(log_p, log_q), t64([math.log(2.0), math.log(1 / 3)]))
    # r = q / p = 0.5 and 3
    torch.testing.assert_close(kl_k3(log_p, log_q), t64([-0.5 - math.log(0.5), 2.0 - math.log(3.0)]))
    # Under samples from p both are unbiased: their p-weighted sums over all actions equal KL(p || q).
    p, q = t64([0.5, 0.3, 0.2]), t64([0.1, 0.6, 0.3])
    exact = (p * (p / q).log()).sum()
    torch.testing.assert_close((p * kl_k1(p.log(), q.log())).sum(), exact)
    torch.testing.assert_close((p * kl_k3(p.log(), q.log())).sum(), exact)


def test_k3_is_never_negative():
    generator = torch.Generator().manual_seed(0)
    log_p = torch.randn(10_000, generator=generator, dtype=torch.float64) * 3
    log_q = torch.randn(10_000, generator=generator, dtype=torch.float64) * 3
    assert (kl_k3(log_p, log_q) >= 0).all()
    assert (kl_k1(log_p, log_q) < 0).any()  # k1 is not: it is only non-negative on average


def test_entropy_bonus_masked():
    entropy = t64([[1.0, 2.0], [3.0, 100.0]])
    assert entropy_bonus(entropy, torch.tensor([[1, 1], [1, 0]])).item() == pytest.approx(2.0)
    assert entropy_bonus(entropy, torch.tensor([[1, 1], [1, 0]]), sequence_mean).item() == pytest.approx(2.25)


def test_mirror_descent_loss_by_hand_with_mask():
    from rl.pg_losses import mirror_descent_loss

    # Sequence 0: log ratio 0.2 + 0.1 = 0.3 (third token masked out); sequence 1: -0.4.
    log_probs = t64([[-1.0, -2.0, -5.0], [-0.5, -0.5, -0.5]])
    old = t64([[-1.2, -2.1, -9.0], [-0.3, -0.3, -0.5]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    rewards, baselines = t64([1.0, 0.0]), t64([0.5, 0.5])
    expected = ((1.0 - 0.5 - 2.0 * 0.3) ** 2 + (0.0 - 0.5 + 2.0 * 0.4) ** 2) / 2
    loss = mirror_descent_loss(log_probs, old, rewards, baselines, tau=2.0, mask=mask)
    assert loss.item() == pytest.approx(expected)
