"""`rl compare`: event files written by the real RunLogger, numbers checked against hand-computed values."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from rl import run_logger
from rl.compare import (
    CONFIG_FILE,
    DEFAULT_TAG,
    average_over_steps,
    compare,
    final_value,
    format_mean_std,
    format_table,
    load_groups,
    plot_groups,
    read_scalars,
    smooth_on_grid,
    summarise,
)
from rl.errors import UserError
from rl.run_logger import RunLogger

STEPS = list(range(10, 101, 10))  # 10 points, one per "episode", at steps 10, 20, ..., 100
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def config(agent: str, env_id: str, seed: int, agent_config: dict | None = None) -> dict:
    return {
        "spec": {"agent": agent, "env_id": env_id, "env_kwargs": {}, "seed": seed},
        "agent_config": agent_config or {},
    }


def log_session(
    run_dir: Path, agent: str, env_id: str, seed: int, steps: Sequence[int], values: Sequence[float], **kwargs
) -> None:
    """One logger session (a new event file), as a run or a resumed run writes it."""
    tag = kwargs.pop("tag", DEFAULT_TAG)
    logger = RunLogger(run_dir, config(agent, env_id, seed, kwargs.pop("agent_config", None)), quiet=True, **kwargs)
    for step, value in zip(steps, values, strict=True):
        logger.scalar(tag, value, step)
    logger.close()


def write_run(
    runs_dir: Path,
    agent: str,
    seed: int,
    values: Sequence[float],
    steps: Sequence[int] = STEPS,
    env_id: str = "GridWorld-v0",
    tag: str = DEFAULT_TAG,
    agent_config: dict | None = None,
) -> Path:
    run_dir = runs_dir / f"{env_id}__{agent}__s{seed}__20250101-000000"
    run_dir.mkdir(parents=True)
    log_session(run_dir, agent, env_id, seed, steps, values, tag=tag, agent_config=agent_config)
    return run_dir


def constant(value: float) -> list[float]:
    return [value] * len(STEPS)


def test_reads_the_config_file_the_logger_writes() -> None:
    assert CONFIG_FILE == run_logger.CONFIG_FILE


def test_read_scalars_returns_every_point_in_step_order(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, "q_learning", 0, [float(i) for i in range(10)])
    steps, values = read_scalars(run_dir, DEFAULT_TAG)
    np.testing.assert_array_equal(steps, STEPS)
    np.testing.assert_array_equal(values, np.arange(10.0))


def test_read_scalars_merges_a_resumed_run_and_drops_the_orphaned_points(tmp_path: Path) -> None:
    # The first session logged up to step 100 but its last checkpoint was at step 60; the resumed session starts
    # there, so the first file's points at 70..100 never happened in the run's final history.
    run_dir = write_run(tmp_path, "q_learning", 0, constant(1.0))
    log_session(run_dir, "q_learning", "GridWorld-v0", 0, [70, 80, 90, 100, 110, 120], [2.0] * 6, initial_step=60)
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 2
    steps, values = read_scalars(run_dir, DEFAULT_TAG)
    np.testing.assert_array_equal(steps, [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120])
    np.testing.assert_array_equal(values, [1.0] * 6 + [2.0] * 6)


def test_smooth_on_grid_averages_since_the_previous_grid_step_and_holds_the_last_value() -> None:
    grid = np.array([0.0, 10.0, 20.0, 30.0])
    steps = np.array([5, 8, 15, 35])  # bins: (.., 0] empty, (0, 10] {1, 3}, (10, 20] {10}, (20, 30] empty, 35 past
    values = np.array([1.0, 3.0, 10.0, 100.0])
    np.testing.assert_allclose(smooth_on_grid(steps, values, grid), [1.0, 2.0, 10.0, 10.0])


def test_average_over_steps_is_the_trapezoid_area_over_the_step_range() -> None:
    grid = np.array([0.0, 10.0, 20.0, 30.0])
    # (1 + 2) / 2 * 10 + (2 + 10) / 2 * 10 + (10 + 10) / 2 * 10 = 15 + 60 + 100 = 175, over 30 steps
    assert average_over_steps(grid, np.array([1.0, 2.0, 10.0, 10.0])) == pytest.approx(175 / 30)
    assert average_over_steps(np.zeros(3), np.array([4.0, 4.0, 4.0])) == 4.0


def test_final_value_is_the_last_tenth_of_points_or_the_last_eval() -> None:
    values = np.arange(20.0)  # last 10% of 20 points: 18 and 19
    assert final_value(values, "charts/episodic_return") == 18.5
    assert final_value(values[:5], "charts/episodic_return") == 4.0  # at least one point
    assert final_value(values, "eval/episodic_return") == 19.0


def test_table_gives_mean_and_std_over_seeds_per_agent(tmp_path: Path) -> None:
    dirs = [write_run(tmp_path, "sarsa", seed, constant(value)) for seed, value in enumerate([1.0, 2.0, 3.0])]
    dirs += [write_run(tmp_path, "q_learning", seed, constant(value)) for seed, value in enumerate([5.0, 7.0])]
    rows = [summarise(group) for group in load_groups(dirs, DEFAULT_TAG)]

    # Constant curves: final value and average over training are the constant; std over seeds is ddof=0.
    assert [(row.agent, row.env_id, row.seeds) for row in rows] == [
        ("q_learning", "GridWorld-v0", 2),
        ("sarsa", "GridWorld-v0", 3),
    ]
    numbers = [[row.final_mean, row.final_std, row.auc_mean, row.auc_std] for row in rows]
    assert numbers[0] == pytest.approx([6.0, 1.0, 6.0, 1.0])
    assert numbers[1] == pytest.approx([2.0, np.sqrt(2 / 3), 2.0, np.sqrt(2 / 3)])
    lines = compare(dirs).splitlines()
    assert "mean ± std over seeds" in lines[0] and "divided by its step range" in lines[1]
    assert lines[2].split() == ["agent", "env", "seeds", "final", "AUC", "/", "steps"]
    assert lines[4].split() == ["q_learning", "GridWorld-v0", "2", "6.00", "±", "1.00", "6.00", "±", "1.00"]
    assert lines[5].split() == ["sarsa", "GridWorld-v0", "3", "2.00", "±", "0.82", "2.00", "±", "0.82"]
    assert lines[4].index("±") == lines[5].index("±")  # aligned columns


def test_runs_of_one_agent_with_other_hyperparameters_form_their_own_rows(tmp_path: Path) -> None:
    settings = [(0, 0.5, 1.0), (1, 0.5, 3.0), (2, 0.05, 10.0)]  # (seed, alpha, constant return); gamma 1 in all
    dirs = [write_run(tmp_path / f"a{alpha}", "q_learning", seed, constant(value),
                      agent_config={"alpha": alpha, "gamma": 1.0}) for seed, alpha, value in settings]  # fmt: skip
    rows = [summarise(group) for group in load_groups(dirs, DEFAULT_TAG)]
    assert [(row.agent, row.seeds, row.final_mean) for row in rows] == [
        ("q_learning(alpha=0.05)", 1, 10.0),
        ("q_learning(alpha=0.5)", 2, 2.0),
    ]
    same = [write_run(tmp_path / "same", "sarsa", seed, constant(1.0), agent_config={"alpha": 0.1}) for seed in (0, 1)]
    assert [group.agent for group in load_groups(same, DEFAULT_TAG)] == ["sarsa"]  # nothing differs: no suffix


def test_auc_and_final_of_ramps_on_a_coarse_grid(tmp_path: Path) -> None:
    # Seed 0 logs 1, 2, ..., 10 at steps 10, ..., 100; seed 1 logs twice that. On the 11-point grid 0, 10, ..., 100
    # seed 0's curve is [1, 1, 2, ..., 10] (step 0 takes the first value): area = 10 * (1 + 49.5) = 505 over 100
    # steps, so 5.05; seed 1's is 10.1. Final values (last 10% = the last point): 10 and 20.
    ramp = [float(i) for i in range(1, 11)]
    dirs = [write_run(tmp_path, "td0", seed, [(seed + 1) * value for value in ramp]) for seed in range(2)]
    (group,) = load_groups(dirs, DEFAULT_TAG, grid_points=11)
    np.testing.assert_array_equal(group.grid, np.arange(0, 101, 10))
    np.testing.assert_allclose(group.curves[0], [1.0, *ramp])
    row = summarise(group)
    assert (row.final_mean, row.final_std) == (15.0, 5.0)
    assert row.auc_mean == pytest.approx((5.05 + 10.1) / 2)
    assert row.auc_std == pytest.approx((10.1 - 5.05) / 2)


def test_groups_split_by_env_and_stop_at_the_shortest_run(tmp_path: Path) -> None:
    short = write_run(tmp_path, "sarsa", 0, [1.0] * 5, steps=[10, 20, 30, 40, 50])
    long = write_run(tmp_path, "sarsa", 1, constant(1.0))
    other_env = write_run(tmp_path, "sarsa", 0, constant(1.0), env_id="FrozenLake-v1")
    groups = load_groups([short, long, other_env, long], DEFAULT_TAG)  # `long` twice, as a shell glob might
    assert [(group.env_id, group.agent, len(group.runs)) for group in groups] == [
        ("FrozenLake-v1", "sarsa", 1),
        ("GridWorld-v0", "sarsa", 2),
    ]
    assert groups[1].grid[-1] == 50
    assert groups[1].label == "sarsa on GridWorld-v0 (2 seeds)" and groups[0].label.endswith("(1 seed)")


def test_mean_and_std_share_their_decimals() -> None:
    assert format_mean_std(187.34, 12.4) == "187.34 ± 12.40"
    assert format_mean_std(0.85, 0.004) == "0.850 ± 0.004"
    assert format_mean_std(1.2e-4, 3e-5) == "0.000120 ± 0.000030"
    assert format_mean_std(0.0, 0.0) == "0.00 ± 0.00"


def test_plot_writes_a_png(tmp_path: Path) -> None:
    dirs = [write_run(tmp_path / "runs", agent, 0, constant(1.0)) for agent in ("sarsa", "q_learning")]
    out = tmp_path / "plots" / "curves.png"
    compare(dirs, out=out)
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000
    assert (
        plot_groups(load_groups(dirs, DEFAULT_TAG), DEFAULT_TAG, tmp_path / "again.png").read_bytes()[:8] == PNG_MAGIC
    )


def test_eval_tag_final_is_the_last_evaluation(tmp_path: Path) -> None:
    tag = "eval/episodic_return"
    dirs = [write_run(tmp_path, "sarsa", seed, [1.0, 5.0, 9.0 + seed], steps=[30, 60, 90], tag=tag) for seed in (0, 1)]
    (row,) = [summarise(group) for group in load_groups(dirs, tag)]
    assert (row.final_mean, row.final_std) == (9.5, 0.5)
    assert "final = last point" in format_table([row])


def test_missing_tag_names_the_run_and_the_tags_it_has(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, "sarsa", 0, constant(1.0))
    with pytest.raises(UserError, match=r"has no scalar tag 'eval/episodic_return'.*--tag.*charts/episodic_return"):
        compare([run_dir], "eval/episodic_return")


def test_not_a_run_dir_says_so_and_suggests_its_runs(tmp_path: Path) -> None:
    write_run(tmp_path / "runs", "sarsa", 0, constant(1.0))
    with pytest.raises(UserError, match=r"not a run directory \(no config.json\).*rl compare .*runs/\*"):
        compare([tmp_path / "runs"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a run directory"):
        read_scalars(tmp_path / "empty", DEFAULT_TAG)
    with pytest.raises(UserError, match="is not a directory"):
        compare([tmp_path / "missing"])
    with pytest.raises(UserError, match="no run directories"):
        compare([])


def test_run_dir_without_events_or_with_a_foreign_config(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(config("sarsa", "GridWorld-v0", 0)))
    with pytest.raises(UserError, match="no TensorBoard event files"):
        compare([run_dir])
    (run_dir / "config.json").write_text(json.dumps({"lr": 0.1}))
    with pytest.raises(UserError, match="lacks spec.agent or spec.env_id"):
        compare([run_dir])


def test_runs_with_other_env_kwargs_form_their_own_group(tmp_path: Path) -> None:
    plain = write_run(tmp_path / "a", "sarsa", 0, [1.0] * 10)
    other = write_run(tmp_path / "b", "sarsa", 1, [3.0] * 10)
    saved = json.loads((other / CONFIG_FILE).read_text())
    saved["spec"]["env_kwargs"] = {"terminal_target": True}
    (other / CONFIG_FILE).write_text(json.dumps(saved))
    labels = [group.label for group in load_groups([plain, other], DEFAULT_TAG)]
    assert labels == ["sarsa on GridWorld-v0 (1 seed)", "sarsa on GridWorld-v0(terminal_target=True) (1 seed)"]
