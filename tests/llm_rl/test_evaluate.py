"""Evaluation: the pass@k estimator by hand and against the binomial formula, the bookkeeping (accuracy of the first
sample, pass@k, per-level accuracy, lengths) on scripted completions split across batches, greedy evaluation of a real
model against a one-problem-at-a-time argmax loop, and the held-out problem sets."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from llm_rl import evaluate as evaluate_module
from llm_rl.evaluate import evaluate, held_out_problems, pass_at_k_estimate, text_codec
from llm_rl.model import ModelConfig, Transformer
from llm_rl.sampling import Completions
from llm_rl.tasks import Problem, get_task, split_of
from llm_rl.tokenizer import BOS_ID, EOS_ID, PAD_ID, build_tokenizer
from rl.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")


def char_model(seed: int = 0) -> Transformer:
    """A random model over the character tokenizer, weights large enough that argmax has no near-ties."""
    tokenizer = build_tokenizer()
    model = Transformer(
        ModelConfig(vocab_size=tokenizer.get_vocab_size(), bos_token_id=BOS_ID, eos_token_ids=(EOS_ID,))
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    return model.eval()


def test_pass_at_k_by_hand():
    assert pass_at_k_estimate(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2) / C(5,2)
    assert pass_at_k_estimate(10, 3, 5) == pytest.approx(1 - 21 / 252)  # 1 - C(7,5) / C(10,5)
    assert pass_at_k_estimate(4, 1, 1) == pytest.approx(0.25)  # pass@1 is the share of correct samples
    assert pass_at_k_estimate(5, 0, 3) == 0.0
    assert pass_at_k_estimate(5, 3, 3) == 1.0  # only 2 wrong samples: any 3 include a correct one
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k_estimate(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))
    with pytest.raises(ValueError):
        pass_at_k_estimate(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k_estimate(3, 1, 4)


SCRIPTS = {  # question -> its three completions; answers 5, 12 and 30
    "Q: 2+3=": ["Answer: 5", "Answer: 4", "Answer: 5"],  # first right, 2 of 3 right
    "Q: 5+7=": ["Answer: 11", "Answer: 12", "Answer: 13"],  # first wrong, 1 of 3 right
    "Q: 10+20=": ["Answer: 1", "x", "Answer: 2"],  # none right
}


def test_bookkeeping_on_scripted_completions(monkeypatch):
    tokenizer = build_tokenizer()
    problems = [
        Problem(q, answer, "", level, "addition", q) for (q, answer, level) in
        [("Q: 2+3=", "5", 1), ("Q: 5+7=", "12", 1), ("Q: 10+20=", "30", 2)]
    ]  # fmt: skip
    served: Counter[str] = Counter()
    batch_sizes = []

    def scripted_generate(model, prompt_ids, prompt_mask, cfg, generator, pad_token_id):
        rows = []
        for ids, mask in zip(prompt_ids.tolist(), prompt_mask.tolist(), strict=True):
            real = [token for token, keep in zip(ids, mask, strict=True) if keep]
            assert real[0] == BOS_ID and mask[-1]  # <bos> prompt, left-padded
            question = tokenizer.decode(real[1:]).removesuffix("\n")
            rows.append(tokenizer.encode(SCRIPTS[question][served[question]]).ids + [EOS_ID])
            served[question] += 1
        batch_sizes.append(len(rows))
        length = max(map(len, rows))
        token_ids = torch.tensor([row + [pad_token_id] * (length - len(row)) for row in rows])
        mask = torch.tensor([[True] * len(row) + [False] * (length - len(row)) for row in rows])
        zeros = torch.zeros(token_ids.shape)
        return Completions(token_ids, mask, zeros, zeros, ["stop"] * len(rows))

    monkeypatch.setattr(evaluate_module, "generate", scripted_generate)
    result = evaluate(char_model(), tokenizer, problems, samples=3, batch_size=4, temperature=1.0)
    assert batch_sizes == [4, 4, 1] and served == {q: 3 for q in SCRIPTS}
    assert result.accuracy == pytest.approx(1 / 3)
    assert result.pass_at_k == pytest.approx(2 / 3) and result.k == 3
    assert result.sample_accuracy == pytest.approx(3 / 9)
    assert result.per_level == {1: 0.5, 2: 0.0}
    assert result.n == 3
    # characters + the stop token: three of 10, three of 11, then 10, 2 and 10
    assert result.mean_length == pytest.approx((3 * 10 + 3 * 11 + 10 + 2 + 10) / 9)
    assert result.completions == ["Answer: 5", "Answer: 11", "Answer: 1"]


def greedy_reference(model: Transformer, prompt: list[int], max_new_tokens: int) -> list[int]:
    """Argmax decoding of one unpadded prompt, recomputing the whole sequence each step."""
    ids = list(prompt)
    for _ in range(max_new_tokens):
        token = int(model(torch.tensor([ids]))[0, -1].argmax())
        ids.append(token)
        if token == EOS_ID:
            break
    return ids[len(prompt) :]


def test_greedy_evaluation_matches_decoding_each_problem_alone():
    model, tokenizer = char_model(), build_tokenizer()
    rng = np.random.default_rng(0)
    problems = [get_task("addition").sample(rng, level) for level in (1, 3, 2, 4)]  # prompts of different lengths
    result = evaluate(model, tokenizer, problems, batch_size=3, max_new_tokens=12)
    codec = text_codec(model, tokenizer)
    references = [greedy_reference(model, codec.prompt_ids(p), 12) for p in problems]
    assert result.completions == [tokenizer.decode(r, skip_special_tokens=True) for r in references]
    assert result.mean_length == pytest.approx(np.mean([len(r) for r in references]))
    assert result.accuracy == 0.0 and set(result.per_level) == {1, 2, 3, 4}  # random weights solve nothing


def test_codec_frames_prompts_with_bos_and_pads_with_the_pad_token():
    codec = text_codec(char_model(), build_tokenizer())
    assert (codec.bos_id, codec.eos_id, codec.pad_id, codec.stop_ids) == (BOS_ID, EOS_ID, PAD_ID, (EOS_ID,))
    problem = get_task("addition").sample(np.random.default_rng(0), 2)
    assert codec.prompt_ids(problem) == [BOS_ID, *build_tokenizer().encode(problem.prompt).ids]


def test_misuse_is_a_user_error():
    model, tokenizer = char_model(), build_tokenizer()
    problems = held_out_problems(get_task("addition"), 2, seed=0)
    with pytest.raises(UserError, match="temperature"):
        evaluate(model, tokenizer, problems, samples=2, temperature=0.0)
    with pytest.raises(UserError, match="no problems"):
        evaluate(model, tokenizer, [])


def test_held_out_problems_spread_over_levels_and_stay_held_out():
    task = get_task("addition")
    problems = held_out_problems(task, 7, seed=4, levels=(1, 2, 3))
    assert Counter(p.level for p in problems) == {1: 3, 2: 2, 3: 2}
    assert all(split_of(p.question) == "held_out" for p in problems)
    assert problems == held_out_problems(task, 7, seed=4, levels=(1, 2, 3))
    assert {p.level for p in held_out_problems(task, 12, seed=0)} == set(task.held_out_levels)
