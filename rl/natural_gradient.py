"""Natural-gradient machinery for TRPO (Schulman et al. 2015, appendix C): Fisher-vector products by double
backpropagation, conjugate gradient, and a backtracking line search on the KL constraint.

TRPO's step: g = grad of the surrogate, x = F^-1 g by conjugate gradient using only products F v, the full step
s = sqrt(2 max_kl / (x^T F x)) x, then the fractions 1, c, c^2, ... of s until one keeps KL <= max_kl and improves
the surrogate. F here is the damped Fisher matrix F_KL + damping I throughout, in the step size too (as sb3-contrib
and OpenAI Baselines compute it); the line search checks the KL itself. Parameters are handled as one flat vector in
the order of `params`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters


def flat_grad(
    output: Tensor, params: Iterable[nn.Parameter], retain_graph: bool | None = None, create_graph: bool = False
) -> Tensor:
    """d output / d params as one flat vector (P,); parameters `output` does not depend on get zeros.

    As in torch.autograd.grad, the graph is kept when `create_graph` is set unless `retain_graph` says otherwise.
    """
    params = list(params)
    grads = torch.autograd.grad(output, params, retain_graph=retain_graph, create_graph=create_graph, allow_unused=True)
    return torch.cat(
        [(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params, strict=True)]
    )


def get_flat_params(params: Iterable[nn.Parameter]) -> Tensor:
    """The parameters' values as one detached flat vector (P,)."""
    return parameters_to_vector(params).detach().clone()


def set_flat_params(params: Iterable[nn.Parameter], flat: Tensor) -> None:
    """Writes a flat vector (P,) into the parameters, in place."""
    with torch.no_grad():
        vector_to_parameters(flat, params)


def fisher_vector_product(
    kl_fn: Callable[[], Tensor], params: Sequence[nn.Parameter], vector: Tensor, damping: float
) -> Tensor:
    """(F + damping I) v, with F the Hessian of the mean KL(pi_old || pi_theta) at theta = theta_old.

    `kl_fn()` returns that KL as a scalar with pi_old detached; at theta_old its Hessian is the Fisher information
    matrix. Two backward passes: g = grad KL (kept in the graph), then grad (g . v). The damping keeps F positive
    definite for conjugate gradient.
    """
    kl_grad = flat_grad(kl_fn(), params, create_graph=True)
    hessian_vector = flat_grad((kl_grad * vector.detach()).sum(), params)
    return hessian_vector + damping * vector


def conjugate_gradient(avp: Callable[[Tensor], Tensor], b: Tensor, iters: int = 10, tol: float = 1e-10) -> Tensor:
    """Approximately solves A x = b for symmetric positive definite A given only products v -> A v.

    Runs at most `iters` iterations from x = 0 (exact after dim(b) in exact arithmetic), stopping early once the
    squared residual norm r . r falls below `tol`.
    """
    x = torch.zeros_like(b)
    residual = b.clone()
    direction = b.clone()
    residual_norm = residual @ residual
    for _ in range(iters):
        if residual_norm < tol:
            break
        a_direction = avp(direction)
        step = residual_norm / (direction @ a_direction)
        x = x + step * direction
        residual = residual - step * a_direction
        new_residual_norm = residual @ residual
        direction = residual + (new_residual_norm / residual_norm) * direction
        residual_norm = new_residual_norm
    return x


@dataclass(frozen=True)
class LineSearchResult:
    """The outcome of `backtracking_line_search`."""

    accepted: bool
    """Whether a step was taken; if not, the parameters are back where they started."""
    step_fraction: float
    """The fraction of the full step taken (1, 1/2, ...); 0.0 when rejected."""
    kl: float
    """KL between the old policy and the one the parameters now hold; 0.0 when rejected."""
    improvement: float
    """Decrease of the surrogate loss the step achieved (positive when accepted); 0.0 when rejected."""


def backtracking_line_search(
    params: Sequence[nn.Parameter],
    full_step: Tensor,
    loss_fn: Callable[[], Tensor],
    kl_fn: Callable[[], Tensor],
    max_kl: float,
    max_backtracks: int = 10,
    backtrack_coeff: float = 0.5,
) -> LineSearchResult:
    """Tries theta_old + f * full_step for f = 1, c, c^2, ... (c = backtrack_coeff, `max_backtracks` tries) and
    keeps the first whose KL is at most `max_kl` and whose surrogate loss is lower than at theta_old.

    `loss_fn()` is the surrogate loss to minimise (e.g. `rl.pg_losses.surrogate_loss`) and `kl_fn()` the mean
    KL(pi_old || pi_theta), both evaluated at the parameters as they stand. If no fraction is accepted the
    parameters are restored to theta_old.
    """
    params = list(params)
    old_params = get_flat_params(params)
    with torch.no_grad():
        loss_before = float(loss_fn())
        for i in range(max_backtracks):
            fraction = backtrack_coeff**i
            set_flat_params(params, old_params + fraction * full_step)
            kl = float(kl_fn())
            improvement = loss_before - float(loss_fn())
            # Written so that a NaN KL or loss rejects the step.
            if kl <= max_kl and improvement > 0:
                return LineSearchResult(True, fraction, kl, improvement)
        set_flat_params(params, old_params)
    return LineSearchResult(False, 0.0, 0.0, 0.0)
