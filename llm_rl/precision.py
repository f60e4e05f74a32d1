"""Mixed precision: bfloat16 matrix products, float32 master weights, float32 log-probabilities and losses.

As in Micikevicius et al. (2018), "Mixed precision training", with bfloat16 (Kalamkar et al. 2019, "A study of
BFLOAT16 for deep learning training"), whose float32-sized exponent makes loss scaling unnecessary:

    forward:  W16 = bf16(W32);  activations and logits in bf16 (torch.autocast picks which ops run in bf16)
    log pi  = log_softmax(float32(logits))        (sampling.py and sequence_log_probs cast before the softmax)
    loss    = f(log pi) in float32;   W32 <- W32 - lr * Adam(grad W32)   (the optimiser only ever sees float32)

The same `autocast` wraps the sampler and the trainer's forward passes, so the log-probs recorded at sampling time and
the ones the Kimi loss recomputes differ only by the cached-versus-full-pass rounding (about 1e-2 per token in bfloat16,
1e-6 in float32; `tests/llm_rl/test_precision.py` measures both).

Choices:
1. `torch.autocast` rather than a bfloat16 copy of the model: the parameters, their gradients and Adam's moments stay
   float32 (no separate master copy to keep in sync), at the cost of casting each weight on every forward pass.
2. RMSNorm and the rotary angles compute in float32 inside the model whatever the autocast setting (model.py).
"""

from __future__ import annotations

import torch

from rl.errors import UserError

PRECISIONS = ("fp32", "bf16")
"""fp32: everything in float32. bf16: bfloat16 autocast over float32 weights."""


def check_precision(precision: str) -> str:
    """`precision` itself if it is one of PRECISIONS, else a UserError naming them."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; pick one of {', '.join(PRECISIONS)}.")
    return precision


def autocast(precision: str, device: torch.device | str) -> torch.autocast:
    """The autocast context for `precision` on `device` ("cpu", "cuda", "cuda:1"); disabled for fp32."""
    device_type = torch.device(device).type
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=check_precision(precision) == "bf16")
