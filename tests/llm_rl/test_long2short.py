"""Long2short: the shortest correct response is kept (scripted samples, and a real tiny model's), the JSONL round
trip through load_problems, merging checked tensor by tensor after a reload, the mismatch errors, the long2short
length reward by hand, and the `merge` / `shortest` subcommands."""

from __future__ import annotations

import argparse
from collections import Counter

import pytest
import torch

from llm_rl import long2short
from llm_rl.data import load_problems
from llm_rl.hf_io import load_pretrained, save_pretrained
from llm_rl.long2short import (
    Response,
    add_long2short_parsers,
    long2short_length_reward,
    merge_models,
    merged_state,
    sample_responses,
    shortest_correct,
    shortest_rejection_sampling,
    write_problems,
)
from llm_rl.model import ModelConfig, Transformer
from llm_rl.rewards import kimi_length_reward
from llm_rl.sampling import Completions, SamplingConfig
from llm_rl.tasks import Problem
from llm_rl.tokenizer import BOS_ID, EOS_ID, build_tokenizer
from rl.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")


def char_model(seed: int = 0, **overrides) -> Transformer:
    tokenizer = build_tokenizer()
    cfg = ModelConfig(vocab_size=tokenizer.get_vocab_size(), bos_token_id=BOS_ID, eos_token_ids=(EOS_ID,), **overrides)
    model = Transformer(cfg)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    return model.eval()


SCRIPTS = {  # question -> its samples, in the order drawn
    "Q: 2+3=": ["2+3=5\nAnswer: 5", "Answer: 4", "Answer: 5", "3+2=5\nAnswer: 5"],  # shortest correct is the third
    "Q: 5+7=": ["2 Answer: 12", "Answer: 13", "1 Answer: 12", "55 Answer: 12"],  # a tie: the first drawn wins
    "Q: 10+20=": ["Answer: 1", "Answer: 2", "x", "Answer: 3"],  # none correct: dropped
}
PROBLEMS = [Problem("Q: 2+3=", "5", "", 1, "addition", "a"), Problem("Q: 5+7=", "12", "", 1, "addition", "b"),
            Problem("Q: 10+20=", "30", "", 2, "addition", "c")]  # fmt: skip


def test_shortest_correct_response_is_kept_from_scripted_samples(monkeypatch, tmp_path):
    tokenizer = build_tokenizer()
    served: Counter[str] = Counter()

    def scripted_generate(model, prompt_ids, prompt_mask, cfg, generator, pad_token_id):
        rows = []
        for ids, mask in zip(prompt_ids.tolist(), prompt_mask.tolist(), strict=True):
            question = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m][1:]).removesuffix("\n")
            rows.append(tokenizer.encode(SCRIPTS[question][served[question]]).ids + [EOS_ID])
            served[question] += 1
        length = max(map(len, rows))
        token_ids = torch.tensor([row + [pad_token_id] * (length - len(row)) for row in rows])
        mask = torch.tensor([[True] * len(row) + [False] * (length - len(row)) for row in rows])
        return Completions(token_ids, mask, torch.zeros(mask.shape), torch.zeros(mask.shape), ["stop"] * len(rows))

    monkeypatch.setattr(long2short, "generate", scripted_generate)
    kept = shortest_rejection_sampling(char_model(), tokenizer, PROBLEMS, 4, SamplingConfig(), batch_size=5)
    assert served == {q: 4 for q in SCRIPTS}
    assert [p.solution for p in kept] == ["Answer: 5", "2 Answer: 12"]
    assert [(p.question, p.answer, p.level) for p in kept] == [("Q: 2+3=", "5", 1), ("Q: 5+7=", "12", 1)]
    back = load_problems(write_problems(kept, tmp_path / "short.jsonl"))
    assert [(p.question, p.answer, p.solution, p.level) for p in back] == [
        (p.question, p.answer, p.solution, p.level) for p in kept
    ]
    with pytest.raises(UserError, match="jsonl"):
        write_problems(kept, tmp_path / "short.json")


def test_shortest_by_length_in_tokens_with_a_real_model():
    model, tokenizer = char_model(), build_tokenizer()
    sampling = SamplingConfig(max_new_tokens=12, temperature=1.0, stop_token_ids=(EOS_ID,))
    responses = sample_responses(model, tokenizer, PROBLEMS, 6, sampling, torch.Generator().manual_seed(0), 7)
    assert [len(r) for r in responses] == [6, 6, 6]
    assert all(1 <= r.length <= 12 for rs in responses for r in rs)
    assert len({r.length for rs in responses for r in rs}) > 1  # lengths vary, so "shortest" means something
    check = lambda problem, text: "1" not in text  # noqa: E731  an arbitrary verifier the samples sometimes pass
    kept = shortest_correct(PROBLEMS, responses, check)
    expected = [min((r for r in rs if check(None, r.text)), key=lambda r: r.length) for rs in responses
                if any(check(None, r.text) for r in rs)]  # fmt: skip
    assert [p.solution for p in kept] == [r.text for r in expected]
    rows = [Response("abc", 4), Response("a", 2)]
    assert shortest_correct(PROBLEMS[:1], [rows], lambda p, t: True)[0].solution == "a"


def save(model: Transformer, path) -> str:
    save_pretrained(model, build_tokenizer(), path)
    return str(path)


def test_merge_averages_every_tensor(tmp_path):
    a, b = char_model(1, tie_word_embeddings=False), char_model(2, tie_word_embeddings=False)
    out = merge_models(save(a, tmp_path / "a"), save(b, tmp_path / "b"), 0.3, tmp_path / "merged")
    merged, tokenizer = load_pretrained(out)
    assert tokenizer.get_vocab() == build_tokenizer().get_vocab() and merged.cfg == a.cfg
    state_a, state_b = a.state_dict(), b.state_dict()
    for name, tensor in merged.state_dict().items():
        torch.testing.assert_close(tensor, 0.3 * state_a[name] + 0.7 * state_b[name])
    assert not torch.equal(merged.state_dict()["lm_head.weight"], state_a["lm_head.weight"])
    # weight 1 gives the first model back exactly
    same, _ = load_pretrained(merge_models(tmp_path / "a", tmp_path / "b", 1.0, tmp_path / "one"))
    assert all(torch.equal(t, state_a[n]) for n, t in same.state_dict().items())


def test_merge_mismatches_are_user_errors(tmp_path):
    a = save(char_model(1), tmp_path / "a")
    wider = save(char_model(2, hidden_size=32, head_dim=8), tmp_path / "wide")
    with pytest.raises(UserError, match="differ in config .*hidden_size"):
        merge_models(a, wider, 0.5, tmp_path / "out")
    with pytest.raises(UserError, match="outside"):
        merge_models(a, a, 1.5, tmp_path / "out")
    with pytest.raises(UserError, match="config.json"):
        merge_models(a, tmp_path / "nothing", 0.5, tmp_path / "out")
    with pytest.raises(UserError, match="shape"):
        merged_state({"w": torch.zeros(2, 3)}, {"w": torch.zeros(3, 2)}, 0.5)
    with pytest.raises(UserError, match="different tensors"):
        merged_state({"w": torch.zeros(2)}, {"v": torch.zeros(2)}, 0.5)
    torch.testing.assert_close(
        merged_state({"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([3.0, 6.0])}, 0.25)["w"],
        torch.tensor([2.5, 5.0]),  # 0.25 * 1 + 0.75 * 3, 0.25 * 2 + 0.75 * 6
    )


def test_long2short_length_reward_by_hand():
    # cap 30: the 40-token response counts as wrong and at 30; lambdas over lengths 10, 20, 30: 0.5, 0, -0.5
    assert long2short_length_reward([10, 20, 40], [True, True, True], 30) == pytest.approx([0.5, 0.0, -0.5])
    assert kimi_length_reward([10, 20, 40], [True, True, True]) == pytest.approx([0.5, 0.5 - 1 / 3, -0.5])
    # within the cap it is Kimi's reward unchanged; wrong answers never earn a positive reward
    assert long2short_length_reward([10, 20, 30], [False, True, True], 30) == kimi_length_reward(
        [10, 20, 30], [False, True, True]
    )
    assert long2short_length_reward([50, 60], [True, True], 30) == [0.0, 0.0]  # both capped: equal lengths
    with pytest.raises(ValueError):
        long2short_length_reward([1], [True], 0)


def test_merge_and_shortest_subcommands(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_long2short_parsers(parser.add_subparsers(required=True))
    a, b = save(char_model(1), tmp_path / "a"), save(char_model(2), tmp_path / "b")
    args = parser.parse_args(["merge", a, b, "--weight", "0.5", "--out", str(tmp_path / "m")])
    assert args.command(args) == 0 and "merged model" in capsys.readouterr().out
    merged, _ = load_pretrained(tmp_path / "m")
    name = "model.embed_tokens.weight"
    torch.testing.assert_close(
        merged.state_dict()[name], 0.5 * char_model(1).state_dict()[name] + 0.5 * char_model(2).state_dict()[name]
    )
    out = tmp_path / "short.jsonl"
    argv = ["shortest", "--init", a, "--task", "addition", "--problems", "2", "--n", "2", "--max-new-tokens", "6"]
    args = parser.parse_args([*argv, "--out", str(out)])
    assert args.command(args) == 0
    assert "of 2 problems" in capsys.readouterr().out and out.is_file()
    args = parser.parse_args(["shortest", "--init", a, "--out", str(tmp_path / "other.jsonl")])
    with pytest.raises(UserError, match="--task"):
        args.command(args)
