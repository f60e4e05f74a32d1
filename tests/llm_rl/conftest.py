"""Fixtures shared by the language-model tests."""

from __future__ import annotations

import pytest

from llm_rl.sft import train as sft_train
from llm_rl.sft_config import SFTConfig, SFTSpec


@pytest.fixture(scope="session")
def warm_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A briefly supervised tiny model: right on some level-1 additions, wrong on others."""
    runs = tmp_path_factory.mktemp("sft")
    cfg = SFTConfig(steps=160, levels=(1,), eval_levels=(1,), eval_problems=0, learning_rate=1e-2, warmup_steps=10)
    return str(sft_train(cfg, SFTSpec("addition", seed=0, runs_dir=str(runs), quiet=True)).checkpoint)
