"""Compare runs: one scalar tag, grouped by (agent, env), mean and std over seeds, as a table and a plot.

    rl compare runs/CartPole-v1__dqn__s* runs/CartPole-v1__a2c__s* --tag charts/episodic_return --out curves.png

How the numbers are made, per group of runs with the same `spec.agent`, `spec.env_id`, `spec.env_kwargs` and
`agent_config` (runs of one agent whose configs differ are labelled with the fields that differ,
`q_learning(alpha=0.5)`, so that a hyperparameter comparison shows one row per setting):
1. Each run's points (one per finished episode for `charts/...`) go onto a common grid of `GRID_POINTS` steps from 0 to
   the shortest run's last step, so every seed contributes at every grid step.
2. A run's value at a grid step is a trailing moving average: the mean of its points logged since the previous grid
   step. A grid step with no new points holds the last value; steps before the run's first point take that first value.
3. Final value: the mean of each run's last 10% of points (at least one), over all its points, not only the grid's
   range. For `eval/` tags, which log one point per evaluation, it is the last point: the final evaluation.
4. AUC: the trapezoid area under a run's smoothed grid curve divided by the grid's step range, i.e. the tag's average
   over training, in the tag's own units (average return for `charts/episodic_return`).
5. "mean ± std" is over the group's runs (seeds); std is the population std (ddof=0), so one seed shows ± 0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rl.errors import UserError

CONFIG_FILE = "config.json"
"""The file `rl.run_logger` writes in every run directory; not imported from there, which would load torch."""
DEFAULT_TAG = "charts/episodic_return"
GRID_POINTS = 100
FINAL_FRACTION = 0.1
"""The share of a run's last points averaged into its final value (tags other than `eval/`)."""
EVENT_FILE_GLOB = "events.out.tfevents.*"


@dataclass(frozen=True, eq=False)
class RunCurve:
    """One run's points for one tag, sorted by environment step."""

    run_dir: Path
    agent: str
    env_id: str
    seed: int | None
    steps: np.ndarray  # (K,) int64
    values: np.ndarray  # (K,) float64
    config: dict[str, Any] = field(default_factory=dict)
    """The agent's config as `config.json` records it."""


@dataclass(frozen=True, eq=False)
class Group:
    """The runs of one agent on one env, their curves on a common step grid."""

    agent: str
    env_id: str
    tag: str
    runs: tuple[RunCurve, ...]
    grid: np.ndarray  # (G,) environment steps
    curves: np.ndarray  # (S, G) one smoothed curve per run (seed)

    @property
    def mean(self) -> np.ndarray:
        return self.curves.mean(axis=0)

    @property
    def std(self) -> np.ndarray:
        return self.curves.std(axis=0)

    @property
    def label(self) -> str:
        seeds = len(self.runs)
        return f"{self.agent} on {self.env_id} ({seeds} seed{'' if seeds == 1 else 's'})"


@dataclass(frozen=True)
class GroupSummary:
    """One table row: final value and AUC (average over training), mean and std over the group's seeds."""

    agent: str
    env_id: str
    tag: str
    seeds: int
    final_mean: float
    final_std: float
    auc_mean: float
    auc_std: float


def read_scalars(run_dir: str | Path, tag: str) -> tuple[np.ndarray, np.ndarray]:
    """All of a run's `(steps, values)` for `tag`, sorted by step, merged over its event files.

    A resumed run adds a new event file that starts at the checkpoint's step (the logger writes the config there
    first); points the older files logged after that step were orphaned by the crash and are dropped. Points at the
    checkpoint step itself are kept: the checkpoint was saved after they were logged.
    """
    run_dir = Path(run_dir)
    require_run_dir(run_dir)
    accumulators = load_event_files(run_dir)
    points: list[tuple[int, float]] = []
    for accumulator in accumulators:
        start = first_step(accumulator)
        if start is None:
            continue
        points = [point for point in points if point[0] <= start]
        if tag in accumulator.Tags()["scalars"]:
            points += [(event.step, event.value) for event in accumulator.Scalars(tag)]
    if not points:
        known = sorted({name for accumulator in accumulators for name in accumulator.Tags()["scalars"]})
        raise UserError(
            f"{run_dir} has no scalar tag {tag!r}; pass --tag with one of its tags: {', '.join(known) or 'none'}."
        )
    points.sort(key=lambda point: point[0])  # stable: equal steps keep their logging order
    steps, values = zip(*points, strict=True)
    return np.asarray(steps, dtype=np.int64), np.asarray(values, dtype=np.float64)


def require_run_dir(run_dir: Path) -> None:
    """Raises a UserError unless `run_dir` is a directory holding `config.json`, with a hint for a runs folder."""
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a directory; pass run directories like runs/ENV__AGENT__s0__DATE.")
    if (run_dir / CONFIG_FILE).is_file():
        return
    nested = [child for child in run_dir.iterdir() if (child / CONFIG_FILE).is_file()]
    hint = f"it holds {len(nested)} runs, so pass them: `rl compare {run_dir}/*`" if nested else "pass a run directory"
    raise UserError(f"{run_dir} is not a run directory (no {CONFIG_FILE}); {hint}.")


def load_event_files(run_dir: Path) -> list[EventAccumulator]:
    """Every event file in `run_dir`, all points kept, in the order they were started; unreadable files skipped."""
    accumulators = []
    for path in sorted(run_dir.glob(EVENT_FILE_GLOB)):
        accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0}).Reload()
        try:
            accumulators.append((accumulator.FirstEventTimestamp(), str(path), accumulator))
        except ValueError:  # an empty file: the writer died before its first event.
            continue
    if not accumulators:
        raise UserError(f"{run_dir} has no TensorBoard event files; train it first with `rl train`.")
    # File names hold the start second and a per-process counter; the first event's wall time orders them exactly.
    return [accumulator for _, _, accumulator in sorted(accumulators, key=lambda item: item[:2])]


def first_step(accumulator: EventAccumulator) -> int | None:
    """The smallest step of any scalar or tensor (the config text) in one event file, or None if it has neither."""
    tags = accumulator.Tags()
    steps = [event.step for tag in tags["scalars"] for event in accumulator.Scalars(tag)]
    steps += [event.step for tag in tags["tensors"] for event in accumulator.Tensors(tag)]
    return min(steps, default=None)


def read_run(run_dir: str | Path, tag: str) -> RunCurve:
    """One run's agent, env and seed from `config.json` and its points for `tag`."""
    run_dir = Path(run_dir)
    require_run_dir(run_dir)
    try:
        recorded = json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
        spec, config = recorded["spec"], dict(recorded.get("agent_config") or {})
        agent, env_id = str(spec["agent"]), env_label(spec["env_id"], spec.get("env_kwargs") or {})
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError, ValueError) as error:
        raise UserError(
            f"{run_dir / CONFIG_FILE} lacks spec.agent or spec.env_id ({error!r}); pass runs made by `rl train`."
        ) from error
    steps, values = read_scalars(run_dir, tag)
    return RunCurve(run_dir, agent, env_id, spec.get("seed"), steps, values, config)


def env_label(env_id: str, env_kwargs: dict) -> str:
    """The env id, with its kwargs when there are any: runs of one env with other kwargs form their own group."""
    if not env_kwargs:
        return str(env_id)
    return f"{env_id}({', '.join(f'{key}={value!r}' for key, value in sorted(env_kwargs.items()))})"


def smooth_on_grid(steps: np.ndarray, values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """A run's value at each grid step: the mean of its points in (previous grid step, grid step].

    Empty intervals hold the previous value; grid steps before the run's first point take that first point's value,
    so a run whose first episode ends after the first grid step still has a curve from step 0. Points past the grid's
    last step are ignored. `steps` must be sorted.
    """
    bins = np.searchsorted(grid, steps, side="left")  # grid[i - 1] < step <= grid[i]  ->  i
    inside = bins < len(grid)
    sums = np.bincount(bins[inside], weights=values[inside], minlength=len(grid))
    counts = np.bincount(bins[inside], minlength=len(grid))
    has_points = counts > 0
    bin_means = np.divide(sums, counts, out=np.zeros(len(grid)), where=has_points)
    last_filled = np.maximum.accumulate(np.where(has_points, np.arange(len(grid)), -1))
    return np.where(last_filled >= 0, bin_means[np.maximum(last_filled, 0)], values[0])


def average_over_steps(grid: np.ndarray, curve: np.ndarray) -> float:
    """Trapezoid area under `curve` divided by the step range: the curve's average over training."""
    span = grid[-1] - grid[0]
    if span <= 0:  # every point at one step: the average is that value
        return float(curve.mean())
    area = np.sum((curve[1:] + curve[:-1]) / 2 * np.diff(grid))
    return float(area / span)


def final_value(values: np.ndarray, tag: str) -> float:
    """The last point for `eval/` tags (the final evaluation), else the mean of the last 10% of points."""
    if tag.startswith("eval/"):
        return float(values[-1])
    count = max(1, math.ceil(FINAL_FRACTION * len(values)))
    return float(values[-count:].mean())


def config_labels(runs: Sequence[RunCurve]) -> list[str]:
    """Each run's agent name, followed by its values of the config fields on which the runs of that agent on that
    env disagree: `q_learning(alpha=0.5)` beside `q_learning(alpha=0.05)`, plain `q_learning` when they all agree."""
    labels = []
    for run in runs:
        peers = [other for other in runs if (other.env_id, other.agent) == (run.env_id, run.agent)]
        keys = sorted({key for other in peers for key in other.config})
        differing = [key for key in keys if len({json.dumps(other.config.get(key)) for other in peers}) > 1]
        settings = ", ".join(f"{key}={run.config.get(key)!r}" for key in differing)
        labels.append(f"{run.agent}({settings})" if settings else run.agent)
    return labels


def group_runs(runs: Sequence[RunCurve], tag: str, grid_points: int = GRID_POINTS) -> list[Group]:
    """Runs grouped by (agent and differing config, env), sorted by env then agent, each group's curves on its own
    common grid."""
    by_key: dict[tuple[str, str], list[RunCurve]] = {}
    for run, agent in zip(runs, config_labels(runs), strict=True):
        by_key.setdefault((run.env_id, agent), []).append(run)
    groups = []
    for (env_id, agent), members in sorted(by_key.items()):
        horizon = min(int(run.steps[-1]) for run in members)  # the shortest run's end: every seed covers the grid
        grid = np.linspace(0, horizon, grid_points)
        curves = np.stack([smooth_on_grid(run.steps, run.values, grid) for run in members])
        groups.append(Group(agent, env_id, tag, tuple(members), grid, curves))
    return groups


def load_groups(run_dirs: Sequence[str | Path], tag: str, grid_points: int = GRID_POINTS) -> list[Group]:
    """Reads every run (each directory once) and groups them."""
    if not run_dirs:
        raise UserError("no run directories given; pass some, e.g. `rl compare runs/*`.")
    unique: dict[Path, Path] = {}  # a shell glob may name one run twice; messages keep the path as typed
    for run_dir in run_dirs:
        unique.setdefault(Path(run_dir).resolve(), Path(run_dir))
    return group_runs([read_run(run_dir, tag) for run_dir in unique.values()], tag, grid_points)


def summarise(group: Group) -> GroupSummary:
    """The group's table row: each run's final value and AUC, then their mean and std over the runs."""
    finals = np.array([final_value(run.values, group.tag) for run in group.runs])
    aucs = np.array([average_over_steps(group.grid, curve) for curve in group.curves])
    return GroupSummary(
        agent=group.agent,
        env_id=group.env_id,
        tag=group.tag,
        seeds=len(group.runs),
        final_mean=float(finals.mean()),
        final_std=float(finals.std()),
        auc_mean=float(aucs.mean()),
        auc_std=float(aucs.std()),
    )


def format_mean_std(mean: float, std: float) -> str:
    """`mean ± std` with the same decimals on both: two, or more so that a small mean (a loss) keeps 3 digits."""
    scale = max(abs(mean), abs(std))
    decimals = 2
    if 0 < scale < 1 and math.isfinite(scale):
        decimals = min(2 - math.floor(math.log10(scale)), 8)
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def format_table(rows: Sequence[GroupSummary]) -> str:
    """Aligned plain-text columns, one row per group, under two lines stating what the numbers are."""
    if not rows:
        return "no runs to compare."
    tag = rows[0].tag
    final_rule = "last point" if tag.startswith("eval/") else f"mean of last {FINAL_FRACTION:.0%} of points"
    notes = [
        f"{tag}: mean ± std over seeds (ddof=0); final = {final_rule} per run;",
        "AUC / steps = area under the smoothed curve divided by its step range (the average over training).",
    ]
    header = ("agent", "env", "seeds", "final", "AUC / steps")
    cells = [
        (
            row.agent,
            row.env_id,
            str(row.seeds),
            format_mean_std(row.final_mean, row.final_std),
            format_mean_std(row.auc_mean, row.auc_std),
        )
        for row in rows
    ]
    widths = [max(len(line[column]) for line in (header, *cells)) for column in range(len(header))]
    left_aligned = (True, True, False, False, False)  # text left, numbers right so their digits line up

    def line(values: Sequence[str]) -> str:
        padded = [
            value.ljust(width) if left else value.rjust(width)
            for value, width, left in zip(values, widths, left_aligned, strict=True)
        ]
        return "  ".join(padded).rstrip()

    rule = line(["-" * width for width in widths])
    return "\n".join([*notes, line(header), rule, *(line(values) for values in cells)])


def plot_groups(groups: Sequence[Group], tag: str, out_path: str | Path) -> Path:
    """Mean ± std curves, one per group, saved as an image (PNG unless `out_path` names another format)."""
    # Imported here: only `--out` needs matplotlib, and it adds half a second to every `rl compare`.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_path = Path(out_path)
    # A bare Figure on the Agg canvas: no display and no change to pyplot's global backend for the caller.
    figure = Figure(figsize=(8, 5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for group in groups:
        (line,) = axes.plot(group.grid, group.mean, label=group.label)
        axes.fill_between(group.grid, group.mean - group.std, group.mean + group.std, color=line.get_color(), alpha=0.2)
    axes.set_xlabel("environment step")
    axes.set_ylabel(tag)
    axes.grid(alpha=0.3)
    axes.legend()
    image_format = out_path.suffix.lstrip(".").lower() or "png"
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(out_path, format=image_format, dpi=120)
    except ValueError as error:
        raise UserError(f"cannot write a {image_format!r} image to {out_path}; pass --out FILE.png.") from error
    except OSError as error:
        raise UserError(f"cannot write {out_path} ({error.strerror}); pass --out in a writable directory.") from None
    return out_path


def compare(run_dirs: Sequence[str | Path], tag: str = DEFAULT_TAG, out: str | Path | None = None) -> str:
    """Reads, groups and summarises the runs; saves the plot if `out` is given; returns the table text."""
    if out is not None and Path(out).is_dir():
        raise UserError(f"--out {out} is a directory; pass an image file name, such as {Path(out) / 'curves.png'}.")
    groups = load_groups(run_dirs, tag)
    if out is not None:
        plot_groups(groups, tag, out)
    return format_table([summarise(group) for group in groups])
