"""TRPO's machinery: flat parameters and gradients, conjugate gradient against a direct solve, the Fisher-vector
product against the explicit Hessian of the KL (and the Fisher matrix) of a tiny categorical policy, and a line search
that never exceeds max_kl and puts the parameters back when it rejects."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.distributions import Categorical, kl_divergence

from rl.natural_gradient import (
    backtracking_line_search,
    conjugate_gradient,
    fisher_vector_product,
    flat_grad,
    get_flat_params,
    set_flat_params,
)
from rl.pg_losses import surrogate_loss


class TinyPolicy(nn.Module):
    """Categorical policy with logits = obs @ weight + bias: 3 features, 4 actions, 16 parameters."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(3, 4, generator=generator, dtype=torch.float64))
        self.bias = nn.Parameter(torch.randn(4, generator=generator, dtype=torch.float64))
        self.obs = torch.randn(5, 3, generator=generator, dtype=torch.float64)  # (B, 3)

    def logits(self, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.obs @ weight + bias  # (B, 4)

    def forward(self) -> Categorical:
        return Categorical(logits=self.logits(self.weight, self.bias))


pytestmark = pytest.mark.usefixtures("one_thread")


def mean_kl_from(policy: TinyPolicy, old_logits: torch.Tensor):
    return lambda: kl_divergence(Categorical(logits=old_logits), policy()).mean()


def test_flat_params_round_trip_and_flat_grad():
    policy = TinyPolicy(0)
    params = list(policy.parameters())
    flat = get_flat_params(params)
    assert flat.shape == (16,)
    torch.testing.assert_close(flat[:12], policy.weight.detach().reshape(-1))
    set_flat_params(params, torch.arange(16, dtype=torch.float64))
    torch.testing.assert_close(policy.bias.detach(), torch.arange(12, 16, dtype=torch.float64))
    flat[0] = 99.0  # a copy: the module does not change
    assert policy.weight[0, 0].item() == 0.0

    output = (policy.weight**2).sum()  # does not depend on the bias: its gradient is zeros
    grad = flat_grad(output, params)
    torch.testing.assert_close(grad, torch.cat([2 * policy.weight.detach().reshape(-1), torch.zeros(4).double()]))


def test_conjugate_gradient_solves_spd_system():
    generator = torch.Generator().manual_seed(0)
    m = torch.randn(6, 6, generator=generator, dtype=torch.float64)
    a = m @ m.T + 0.5 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, generator=generator, dtype=torch.float64)
    x = conjugate_gradient(lambda v: a @ v, b, iters=6, tol=1e-20)
    torch.testing.assert_close(x, torch.linalg.solve(a, b))
    # More iterations than dimensions: the residual tolerance stops it before it divides by zero.
    torch.testing.assert_close(conjugate_gradient(lambda v: a @ v, b, iters=50, tol=1e-20), torch.linalg.solve(a, b))
    # Fewer iterations give an approximation, not the solution.
    assert not torch.allclose(conjugate_gradient(lambda v: a @ v, b, iters=2), torch.linalg.solve(a, b))


def test_fisher_vector_product_equals_explicit_hessian_of_kl():
    policy = TinyPolicy(1)
    params = list(policy.parameters())
    old_logits = policy.logits(policy.weight, policy.bias).detach()
    theta = get_flat_params(params)

    def kl_of(flat: torch.Tensor) -> torch.Tensor:
        logits = policy.logits(flat[:12].reshape(3, 4), flat[12:])
        return kl_divergence(Categorical(logits=old_logits), Categorical(logits=logits)).mean()

    hessian = torch.autograd.functional.hessian(kl_of, theta)  # (16, 16)
    vector = torch.randn(16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    damping = 0.1
    fvp = fisher_vector_product(mean_kl_from(policy, old_logits), params, vector, damping)
    torch.testing.assert_close(fvp, hessian @ vector + damping * vector)

    # At theta_old that Hessian is the Fisher matrix: mean over states of sum_a pi(a) grad log pi(a) grad log pi(a)^T.
    def log_pi(flat: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(policy.logits(flat[:12].reshape(3, 4), flat[12:]), dim=-1)  # (B, 4)

    scores = torch.autograd.functional.jacobian(log_pi, theta)  # (B, 4, 16)
    probs = log_pi(theta).exp()
    fisher = torch.einsum("ba,bai,baj->ij", probs, scores, scores) / 5
    torch.testing.assert_close(fisher, hessian)


def quadratic_problem():
    """theta in R^2 from 0, surrogate loss |theta - (1, 0)|^2, a stand-in KL 0.5 |theta - theta_old|^2."""
    theta = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    start = theta.detach().clone()
    target = torch.tensor([1.0, 0.0], dtype=torch.float64)
    return theta, lambda: ((theta - target) ** 2).sum(), lambda: 0.5 * ((theta - start) ** 2).sum()


def test_line_search_by_hand():
    theta, loss_fn, kl_fn = quadratic_problem()
    # Fraction 1 -> (4, 0): KL 8 > 1; 1/2 -> (2, 0): KL 2 > 1; 1/4 -> (1, 0): KL 0.5, loss 1 -> 0.
    result = backtracking_line_search([theta], torch.tensor([4.0, 0.0]).double(), loss_fn, kl_fn, max_kl=1.0)
    assert (result.accepted, result.step_fraction, result.kl, result.improvement) == (True, 0.25, 0.5, 1.0)
    torch.testing.assert_close(theta.detach(), torch.tensor([1.0, 0.0]).double())
    # With KL allowed up to 2.5, fraction 1/2 keeps the KL but does not improve (loss 1 -> 1), so 1/4 still wins.
    theta, loss_fn, kl_fn = quadratic_problem()
    result = backtracking_line_search([theta], torch.tensor([4.0, 0.0]).double(), loss_fn, kl_fn, max_kl=2.5)
    assert result.step_fraction == 0.25


@pytest.mark.parametrize(("step", "max_kl"), [((-1.0, 0.0), 10.0), ((4.0, 0.0), 1e-4)])
def test_line_search_restores_params_when_rejecting(step, max_kl):
    theta, loss_fn, kl_fn = quadratic_problem()
    with torch.no_grad():
        theta.add_(torch.tensor([0.25, -0.5]).double())  # start somewhere other than zero
    before = theta.detach().clone()
    result = backtracking_line_search([theta], torch.tensor(step).double(), loss_fn, kl_fn, max_kl, max_backtracks=5)
    assert not result.accepted and result.step_fraction == 0.0
    assert torch.equal(theta.detach(), before)


@pytest.mark.parametrize("seed", range(6))
def test_natural_gradient_step_never_exceeds_max_kl(seed):
    # TRPO's step on a tiny policy: x = F^-1 g by conjugate gradient, scaled so that 0.5 s^T F s = max_kl; the
    # quadratic model is only approximate, so some seeds need a backtrack (fraction 1/2) to keep the true KL.
    policy = TinyPolicy(seed)
    params = list(policy.parameters())
    generator = torch.Generator().manual_seed(100 + seed)
    actions = torch.randint(0, 4, (5,), generator=generator)
    advantages = torch.randn(5, generator=generator, dtype=torch.float64)
    old_logits = policy.logits(policy.weight, policy.bias).detach()
    old_log_probs = Categorical(logits=old_logits).log_prob(actions)
    kl_fn = mean_kl_from(policy, old_logits)

    def loss_fn():
        return surrogate_loss(policy().log_prob(actions), old_log_probs, advantages)

    def fvp(v: torch.Tensor) -> torch.Tensor:
        return fisher_vector_product(kl_fn, params, v, damping=0.01)

    direction = conjugate_gradient(fvp, -flat_grad(loss_fn(), params))
    max_kl = 0.01 * (1 + seed % 3)
    full_step = math.sqrt(2 * max_kl / float(direction @ fvp(direction))) * direction
    result = backtracking_line_search(params, full_step, loss_fn, kl_fn, max_kl)
    with torch.no_grad():
        actual_kl = float(kl_fn())
    assert result.accepted and result.improvement > 0
    assert actual_kl == pytest.approx(result.kl) and 0 < actual_kl <= max_kl
