"""RL fine-tuning's guards: the verifier that scores a data file's rows (by value, as `rl llm eval` does, not by a
task's exact check)."""

from __future__ import annotations

import json

import pytest
import torch

from llm_rl.evaluate import text_codec
from llm_rl.experience import Responses, scored
from llm_rl.model import Transformer, preset
from llm_rl.rl_config import RLConfig, RLSpec
from llm_rl.rl_trainer import problem_pool
from llm_rl.tasks import ALPHABET, get_task
from llm_rl.tokenizer import BOS_ID, EOS_ID, build_tokenizer

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
