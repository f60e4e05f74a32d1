"""The run logger: TensorBoard events, the resolved config, a progress bar and one readable line per interval.

Tags (x-axis: global environment step): `charts/episodic_return`, `charts/episodic_length` (one point per finished
training episode), `charts/SPS`, `losses/<name>`, `eval/episodic_return`, `eval/value_rmse`.
"""

from __future__ import annotations

import json
import time
from collections import deque
from datetime import datetime
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from rl.checkpoint import atomic_write_json
from rl.errors import UserError
from rl.rollout import EpisodeStats

CONFIG_FILE = "config.json"


def new_run_dir(runs_dir: str | Path, env_id: str, agent: str, seed: int) -> Path:
    """`{runs_dir}/{env}__{agent}__s{seed}__{YYYYmmdd-HHMMSS}`, made unique if that second is taken."""
    env_name = env_id.replace("/", "_").replace(":", "_")
    stem = f"{env_name}__{agent}__s{seed}__{datetime.now():%Y%m%d-%H%M%S}"
    run_dir = Path(runs_dir) / stem
    suffix = 1
    while run_dir.exists():
        run_dir = Path(runs_dir) / f"{stem}-{suffix}"
        suffix += 1
    try:
        run_dir.mkdir(parents=True)
    except OSError as error:
        raise UserError(
            f"cannot make a run directory under {runs_dir} ({error.strerror}); pass a writable --runs-dir."
        ) from None
    return run_dir


def read_run_config(run_dir: Path, key: str, command: str) -> dict:
    """config.json of a run directory written by `command`, which keeps its config under `key` beside "spec"."""
    path = Path(run_dir) / CONFIG_FILE
    if not Path(run_dir).is_dir():
        problem = "is not a directory" if Path(run_dir).exists() else "does not exist"
        raise UserError(f"run directory {run_dir} {problem}; pass a run directory written by `{command}`.")
    if not path.is_file():
        raise UserError(f"{run_dir} has no config.json; pass a run directory written by `{command}`.")
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not valid JSON ({error}); the run directory is damaged.") from None
    if not isinstance(saved, dict) or not isinstance(saved.get(key), dict) or not isinstance(saved.get("spec"), dict):
        raise UserError(f"{run_dir} was not written by `{command}`; pass one of its run directories.")
    return saved


def config_as_markdown(config: dict) -> str:
    rows = "\n".join(f"|{key}|{value!r}|" for key, value in config.items())
    return f"|param|value|\n|-|-|\n{rows}"


class RunLogger:
    """Writes one run's TensorBoard events and console output."""

    def __init__(
        self,
        run_dir: Path,
        config: dict,
        total: int | None = None,
        initial_step: int = 0,
        print_every: int = 10_000,
        quiet: bool = False,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.print_every = print_every
        self.quiet = quiet
        atomic_write_json(self.run_dir / CONFIG_FILE, config)
        # On resume, purge_step drops what an earlier process logged after the step of its last checkpoint (a crash
        # between checkpoints), so the curves do not hold those steps twice; points at that step were checkpointed.
        self.writer = SummaryWriter(str(self.run_dir), purge_step=initial_step + 1 if initial_step > 0 else None)
        self.writer.add_text("config", config_as_markdown(config), initial_step)
        self.recent_returns: deque[float] = deque(maxlen=20)
        self._bar = tqdm(total=total, initial=initial_step, unit="step", disable=True if quiet else None, leave=False)
        self._last_step = initial_step
        self._last_time = time.perf_counter()
        self._next_print = initial_step + print_every

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.writer.add_scalar(tag, value, step)

    def text(self, tag: str, text: str, step: int) -> None:
        self.writer.add_text(tag, text, step)

    def episodes(self, finished: list[EpisodeStats], step: int) -> None:
        """One `charts/episodic_return` and `charts/episodic_length` point per finished training episode."""
        for episode in finished:
            self.writer.add_scalar("charts/episodic_return", episode.episode_return, step)
            self.writer.add_scalar("charts/episodic_length", episode.length, step)
            self.recent_returns.append(episode.episode_return)

    def progress(self, step: int, final: bool = False) -> None:
        """Moves the bar; every `print_every` steps, and at the `final` step, logs `charts/SPS` and prints one line."""
        self._bar.update(step - self._bar.n)
        if step < self._next_print and not (final and step > self._last_step):
            return
        now = time.perf_counter()
        sps = (step - self._last_step) / max(now - self._last_time, 1e-9)
        self.writer.add_scalar("charts/SPS", sps, step)
        self._last_step, self._last_time = step, now
        self._next_print = step + self.print_every
        recent = f"{self.mean_recent_return():.1f}" if self.recent_returns else "- (no episode has ended yet)"
        self.line(f"step {step} | return {recent} | {format_rate(sps)} sps")

    def leave_out(self, seconds: float) -> None:
        """Time spent on something other than training (an evaluation during it), which charts/SPS should not count."""
        self._last_time += seconds

    def mean_recent_return(self) -> float:
        return sum(self.recent_returns) / len(self.recent_returns) if self.recent_returns else float("nan")

    def line(self, text: str) -> None:
        if not self.quiet:
            tqdm.write(text)

    def close(self) -> None:
        self._bar.close()
        self.writer.close()


def format_rate(rate: float) -> str:
    """1234 -> '1.2k', 3_400_000 -> '3.4M'."""
    for limit, suffix in ((1e6, "M"), (1e3, "k")):
        if rate >= limit:
            return f"{rate / limit:.1f}{suffix}"
    return f"{rate:.0f}"


class SilentLogger:
    """A RunLogger that writes nothing: what the ranks other than rank 0 of a data-parallel run log to."""

    def scalar(self, tag: str, value: float, step: int) -> None: ...

    def text(self, tag: str, text: str, step: int) -> None: ...

    def progress(self, step: int) -> None: ...

    def line(self, text: str) -> None: ...

    def close(self) -> None: ...
