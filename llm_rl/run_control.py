"""How an `rl llm sft` or `rl llm train` run ends early: a stop signal ends it after the current step with a
checkpoint; a loss, gradient or weight that is no longer finite ends it without one.

A non-finite loss or gradient norm (a learning rate far too large, say) would make the optimiser step write NaN into
every weight, and saving those would replace the last good checkpoint (an all-NaN model that evaluates to 0 and
cannot be trained further). So the step is not taken: the run raises `rl.errors.Diverged` (one `error:` line, exit
status 2), saves nothing, keeps its last checkpoint as it was, and a new run that has no checkpoint yet is removed,
as `rl train` does.
"""

from __future__ import annotations

import math
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import torch

from rl.checkpoint import CHECKPOINT_FILE
from rl.errors import Diverged


class Closable(Protocol):
    def close(self) -> None: ...


@contextmanager
def stop_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM while the block runs (the loop stops and saves); handlers restored after."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield stop
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda signum, frame: stop.set())
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def diverged(where: str, measured: str, learning_rate: float) -> Diverged:
    """The error that stops a run at `where` ("iteration 7") because `measured` ("loss nan") is not finite."""
    return Diverged(
        f"training diverged at {where} ({measured}); nothing after the last checkpoint was saved; lower "
        f"learning_rate (now {learning_rate:g}) and start a new run."
    )


def is_finite_step(loss: float, grad_norm: torch.Tensor) -> bool:
    """Whether an optimiser step on this loss and (clipped) gradient norm keeps the weights finite."""
    norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm  # FSDP2's DTensor norm
    return math.isfinite(loss) and math.isfinite(float(norm))


def weights_are_finite(model: torch.nn.Module) -> bool:
    """Whether every parameter this process holds is finite (a shard of each under FSDP2)."""
    for parameter in model.parameters():
        local = parameter.to_local() if hasattr(parameter, "to_local") else parameter
        if not torch.isfinite(local.detach()).all():
            return False
    return True


@contextmanager
def keep_last_checkpoint(run_dir: Path, logger: Closable, is_main: bool = True) -> Iterator[None]:
    """On Diverged: closes the logger and removes the run directory if it has no checkpoint yet (module docstring)."""
    try:
        yield
    except Diverged:
        logger.close()
        if is_main and not (run_dir / CHECKPOINT_FILE).is_file():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
