"""RL fine-tuning's guards: the verifier that scores a data file's rows (by value, as `rl llm eval` does, not by a
task's exact check), and the stop on a loss, gradient or weight that is no longer finite, which saves nothing and
keeps the last good checkpoint."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from llm_rl import rl_trainer
from llm_rl.evaluate import text_codec
from llm_rl.experience import Responses, scored
from llm_rl.model import Transformer, preset
from llm_rl.rl_config import RLConfig, RLSpec
from llm_rl.rl_trainer import problem_pool
from llm_rl.tasks import ALPHABET, get_task
from llm_rl.tokenizer import BOS_ID, EOS_ID, build_tokenizer
from rl.errors import Diverged

pytestmark = pytest.mark.usefixtures("one_thread")


def training_rewards(task: str, row: dict, completions: list[str], tmp_path) -> list[float]:
    """The rewards `rl llm train --task TASK --data FILE` gives these completions to the file's one row: the pool and
    verifier of `problem_pool`, scored by `experience.scored` as an iteration scores its sampled responses."""
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps(row) + "\n")
    pool, check = problem_pool(get_task(task), RLSpec("kimi", "unused", task, data=str(data)), RLConfig())
    tokenizer = build_tokenizer(ALPHABET + ".\\{}fr,")  # the tasks' characters and those of the LaTeX answers
    torch.manual_seed(0)
    model = Transformer(preset("tiny", vocab_size=tokenizer.get_vocab_size(), bos_token_id=BOS_ID,
                               eos_token_ids=(EOS_ID,)))  # fmt: skip
    codec = text_codec(model, tokenizer)
    ids = [codec.encode(text) + [EOS_ID] for text in completions]
    width = max(len(row) for row in ids)
    token_ids = torch.tensor([row + [codec.pad_id] * (width - len(row)) for row in ids])  # (G, L)
    mask = torch.tensor([[i < len(row) for i in range(width)] for row in ids])
    prompt = torch.tensor([codec.prompt_ids(pool[0])] * len(ids))  # (G, P)
    responses = Responses(prompt, torch.ones_like(prompt, dtype=torch.bool), token_ids, mask, mask,
                          ["stop"] * len(ids))  # fmt: skip
    exp = scored(model, None, responses, pool, codec, check, torch.zeros(len(ids)), 0.0, int(mask.sum()))
    return exp.rewards.flatten().tolist()


def test_a_data_row_is_rewarded_by_value_as_eval_checks_it(tmp_path):
    row = {"question": "Q: 1/2=", "answer": "\\frac{1}{2}"}
    assert training_rewards("addition", row, ["Answer: 0.5", "Answer: 1/2", "Answer: 0.4"], tmp_path) == [1, 1, 0]
    row = {"question": "Q: 1000+234=", "answer": "1,234"}
    assert training_rewards("multiplication", row, ["Answer: 1234", "Answer: 1243"], tmp_path) == [1, 0]


def test_countdown_rows_keep_the_countdown_verifier(tmp_path):
    # The row's answer is one of several valid expressions; a bare "21" has the right value but uses no numbers.
    row = {"question": "Q: 3 7 -> 21", "answer": "3*7"}
    assert training_rewards("countdown", row, ["Answer: 7*3", "Answer: 21", "Answer: 3+7"], tmp_path) == [1, 0, 0]


def test_eval_and_shortest_check_a_data_row_as_training_does(tmp_path):
    from argparse import Namespace

    from llm_rl.cli import eval_problems
    from llm_rl.long2short import task_problems

    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"question": "Q: 1/2=", "answer": "\\frac{1}{2}"}) + "\n")
    args = Namespace(data=str(data), n=None, problems=1, task="addition")
    for problems, check in (eval_problems(args, get_task("addition")), task_problems(args)):
        assert check(problems[0], "Answer: 0.5") and not check(problems[0], "Answer: 0.4")


QUICK = dict(levels=(1,), problems_per_iteration=2, samples_per_problem=4, max_new_tokens=24, pool_size=4,
             eval_problems=0, updates_per_iteration=2, sampler="uniform")  # fmt: skip
"""Responses long enough to finish, so that some are right and the gradient is not zero."""


def files(directory: Path) -> dict[str, bytes]:
    return {str(path.relative_to(directory)): path.read_bytes() for path in directory.rglob("*") if path.is_file()}


def test_a_huge_learning_rate_stops_the_run_without_saving_it(cli, warm_model, tmp_path):
    runs = tmp_path / "runs"
    quick = [f"{key}={json.dumps(value)}" for key, value in QUICK.items()]
    argv = ["llm", "train", "--init", warm_model, "--task", "addition", "--runs-dir", str(runs), "--quiet"]
    code, out, err = cli(*argv, "--set", "learning_rate=1e30", "checkpoint_every=1", "iterations=3", *quick)
    assert code == 2 and err.startswith("error: training diverged at iteration 1 (") and "checkpoint" not in out
    assert err.strip().endswith("lower learning_rate (now 1e+30) and start a new run.")
    assert not any(runs.iterdir())  # a new run with no checkpoint yet is removed


def model_and_checkpoint(run_dir: Path) -> dict[str, bytes]:
    """The run's weights and checkpoint (config.json and the events file change on every resume)."""
    return {
        name: data
        for name, data in files(run_dir).items()
        if name.startswith("model/") or name.endswith(".safetensors")
    }


@pytest.mark.parametrize("bad", ["loss", "weights"])
def test_a_resumed_run_that_diverges_keeps_its_last_good_checkpoint(warm_model, tmp_path, monkeypatch, bad):
    spec = RLSpec("kimi", warm_model, "addition", seed=0, runs_dir=str(tmp_path), quiet=True)
    first = rl_trainer.train(RLConfig(iterations=2, **QUICK), spec)
    saved = model_and_checkpoint(first.run_dir)
    kimi, update = rl_trainer.OBJECTIVES["kimi"], rl_trainer.update

    def nan_loss(log_probs, exp, cfg):
        return kimi(log_probs, exp, cfg) * math.nan

    def inf_weight_after_update(policy, model, *args, **kwargs):
        stats = update(policy, model, *args, **kwargs)
        next(model.parameters()).data[0, 0] = math.inf  # as a huge learning rate times a finite step would make it
        return stats

    if bad == "loss":
        monkeypatch.setitem(rl_trainer.OBJECTIVES, "kimi", nan_loss)
    else:
        monkeypatch.setattr(rl_trainer, "update", inf_weight_after_update)
    measured = "loss nan, gradient norm nan" if bad == "loss" else "a weight is not finite"
    with pytest.raises(Diverged, match=f"^training diverged at iteration 3 \\({measured}\\); nothing after the last"):
        rl_trainer.train(RLConfig(iterations=4, checkpoint_every=1, **QUICK), spec, resume=first.run_dir)
    assert model_and_checkpoint(first.run_dir) == saved
