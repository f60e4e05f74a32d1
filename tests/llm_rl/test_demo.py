"""`rl demo --llm` end to end at toy budgets: a warm-up, Kimi RL from it, and both held-out accuracies reported."""

from __future__ import annotations

from functools import partial

import pytest

from llm_rl import demo
from llm_rl.rl_config import RLConfig
from llm_rl.sft_config import SFTConfig
from rl.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_llm_demo_reports_the_accuracy_before_and_after_rl(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "SFTConfig", partial(SFTConfig, steps=20, batch_size=8))
    monkeypatch.setattr(demo, "RLConfig", partial(RLConfig, iterations=2, problems_per_iteration=2, max_new_tokens=16))
    monkeypatch.setattr(demo, "EVAL_PROBLEMS", 6)
    monkeypatch.setattr("rl.demo.DEMO_RUNS", [("td0", {}, 200)])  # the tabular part, kept short
    assert main(["demo", "--llm", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = {line.split("  ")[0]: line.split() for line in out.splitlines() if line.startswith("after ")}
    assert set(rows) == {"after the warm-up", "after Kimi RL"}
    for row in rows.values():
        assert len(row) == 3 + 6 + 2 and all(0 <= float(value) <= 1 for value in row[3:-1])  # L1-L6, all; length
    run_kinds = sorted(path.name.split("__")[:2][1] for path in tmp_path.iterdir())
    assert run_kinds == ["kimi", "sft", "td0"]
    assert all(list(path.glob("events.out.tfevents.*")) for path in tmp_path.iterdir())
