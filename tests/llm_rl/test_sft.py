"""Supervised warm-up: the loss mask and the learning-rate schedule by hand, the loss against a full-logits reference,
a seeded run on the easiest addition level that learns it, the saved checkpoint against the trained model, and an
interrupted run that resumes onto the same losses as an uninterrupted one."""

from __future__ import annotations

import math
import os
import signal
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from llm_rl import sft
from llm_rl.causal_lm import load_causal_lm
from llm_rl.evaluate import text_codec
from llm_rl.hf_io import load_pretrained
from llm_rl.model import ModelConfig, Transformer
from llm_rl.sft import learning_rate, sft_batch, sft_batch_from_problems, sft_loss, train
from llm_rl.sft_config import SFTConfig, SFTSpec
from llm_rl.tasks import get_task
from llm_rl.tokenizer import EOS_ID, build_tokenizer
from rl.errors import Diverged, UserError
from rl.pg_losses import token_mean

LEVEL_ONE = dict(levels=(1,), eval_levels=(1,), batch_size=32, learning_rate=1e-2, warmup_steps=10, num_threads=1)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_loss_mask_covers_only_solution_tokens_by_hand():
    # <bos>=1, prompts 10 11 and 12, solutions 20 21 <eos> and 22 <eos>; pad 0
    batch = sft_batch([[1, 10, 11], [1, 12]], [[20, 21, 2], [22, 2]], pad_id=0)
    assert batch.input_ids.tolist() == [[1, 10, 11, 20, 21], [1, 12, 22, 0, 0]]
    assert batch.targets.tolist() == [[10, 11, 20, 21, 2], [12, 22, 2, 0, 0]]
    assert batch.loss_mask.tolist() == [[False, False, True, True, True], [False, True, True, False, False]]


def test_masked_targets_are_the_solution_and_eos():
    tokenizer = build_tokenizer()
    model = Transformer(ModelConfig(vocab_size=tokenizer.get_vocab_size(), bos_token_id=1, eos_token_ids=(EOS_ID,)))
    codec = text_codec(model, tokenizer)
    problems = [get_task("addition").sample(np.random.default_rng(seed), level) for seed, level in [(0, 1), (1, 3)]]
    batch = sft_batch_from_problems(problems, codec)
    for row, problem in enumerate(problems):
        targets = batch.targets[row][batch.loss_mask[row]].tolist()
        assert targets[-1] == EOS_ID and tokenizer.decode(targets[:-1]) == problem.solution
        assert tokenizer.decode(batch.input_ids[row][: len(codec.prompt_ids(problem))].tolist()) == problem.prompt


def test_answer_only_examples_are_the_bare_answer_line_at_the_configured_share():
    tokenizer = build_tokenizer()
    model = Transformer(ModelConfig(vocab_size=tokenizer.get_vocab_size(), bos_token_id=1, eos_token_ids=(EOS_ID,)))
    codec, task = text_codec(model, tokenizer), get_task("addition")

    def solutions(fraction: float, batch_size: int = 2000) -> list[str]:
        batch = sft.sample_batch(task, task.levels, batch_size, fraction, np.random.default_rng(0), codec, "cpu")
        return [
            tokenizer.decode(row[mask].tolist()[:-1]) for row, mask in zip(batch.targets, batch.loss_mask, strict=True)
        ]

    problem = task.sample(np.random.default_rng(7), 4)
    assert sft.answer_line_only(problem).solution == f"Answer: {problem.answer}" != problem.solution
    assert all(text.startswith("Answer: ") for text in solutions(1.0, 64))
    assert not any(text.startswith("Answer: ") for text in solutions(0.0, 64))
    share = np.mean([text.startswith("Answer: ") for text in solutions(0.3)])
    assert abs(share - 0.3) < 3 * math.sqrt(0.3 * 0.7 / 2000)


def test_sft_loss_is_the_token_mean_of_the_solution_log_likelihood():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=30))
    batch = sft_batch([[1, 10, 11, 12], [1, 13]], [[20, 2], [22, 23, 24, 25, 2]], pad_id=0)
    log_probs = model(batch.input_ids).log_softmax(-1).gather(-1, batch.targets[..., None]).squeeze(-1)  # (B, L)
    expected = token_mean(-log_probs, batch.loss_mask)
    torch.testing.assert_close(sft_loss(model, batch), expected)
    # 7 solution tokens: the mean weighs every token alike, not every sequence
    assert batch.loss_mask.sum(1).tolist() == [2, 5]
    # right padding (the last position of row 0) cannot leak into the real positions of a causal model
    batch.input_ids[0, -1] = 7
    torch.testing.assert_close(sft_loss(model, batch), expected)


def test_learning_rate_warms_up_then_follows_a_half_cosine():
    cfg = SFTConfig(steps=110, warmup_steps=10, learning_rate=1.0, final_lr_fraction=0.1)
    assert learning_rate(0, cfg) == pytest.approx(0.1)
    assert learning_rate(9, cfg) == pytest.approx(1.0)
    assert learning_rate(10, cfg) == pytest.approx(1.0)
    assert learning_rate(60, cfg) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway down: cos(pi / 2) = 0
    assert learning_rate(85, cfg) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(0.75 * math.pi)))
    assert learning_rate(110, cfg) == pytest.approx(0.1)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError):
        SFTConfig(steps=0)
    with pytest.raises(ValueError):
        SFTConfig(final_lr_fraction=1.5)
    with pytest.raises(ValueError, match="answer_only_fraction"):
        SFTConfig(answer_only_fraction=-0.1)
    with pytest.raises(UserError, match="unknown precision"):
        SFTConfig(precision="fp16")


@pytest.fixture(scope="module")
def level_one_run(tmp_path_factory):
    torch.set_num_threads(1)
    cfg = SFTConfig(steps=250, eval_problems=50, eval_every=0, **LEVEL_ONE)
    return train(cfg, SFTSpec("addition", seed=0, runs_dir=str(tmp_path_factory.mktemp("runs")), quiet=True))


def test_short_sft_on_the_easiest_level_learns_it(level_one_run):
    losses = level_one_run.losses
    assert len(losses) == 250 and not level_one_run.stopped
    assert np.mean(losses[-20:]) < 0.1 * np.mean(losses[:20])
    (step, result), *_ = level_one_run.evals
    assert step == 250 and result.n == 50 and set(result.per_level) == {1}
    # single-digit sums never seen in training (seed 0 reaches 0.82; guessing one of the 19 sums gets about 0.05)
    assert result.accuracy >= 0.6


def test_saved_checkpoint_loads_with_the_same_logits(level_one_run):
    assert level_one_run.checkpoint == level_one_run.run_dir / "model"
    model, tokenizer = load_pretrained(level_one_run.checkpoint)
    ids = torch.tensor([tokenizer.encode("Q: 3+4=\n3+4=7 c0\nAnswer: 7").ids])
    torch.testing.assert_close(model(ids), level_one_run.model(ids), rtol=0, atol=0)
    assert tokenizer.to_str() == build_tokenizer().to_str()


def test_interrupted_run_resumes_onto_the_uninterrupted_losses(tmp_path, monkeypatch):
    cfg = SFTConfig(steps=12, eval_problems=0, checkpoint_every=0, **LEVEL_ONE)
    full = train(cfg, SFTSpec("addition", seed=3, runs_dir=str(tmp_path / "full"), quiet=True))

    calls = 0
    real_sample_batch = sft.sample_batch

    def interrupt_at_step_5(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 5:
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C would; the handler lets the step finish
        return real_sample_batch(*args, **kwargs)

    monkeypatch.setattr(sft, "sample_batch", interrupt_at_step_5)
    handler = signal.getsignal(signal.SIGINT)
    stopped = train(cfg, SFTSpec("addition", seed=3, runs_dir=str(tmp_path / "cut"), quiet=True))
    monkeypatch.setattr(sft, "sample_batch", real_sample_batch)
    assert stopped.stopped and stopped.steps == 5 and (stopped.checkpoint / "model.safetensors").is_file()
    assert signal.getsignal(signal.SIGINT) is handler  # put back after the run

    resumed = train(cfg, SFTSpec("addition", seed=3, runs_dir=str(tmp_path / "cut"), quiet=True), stopped.run_dir)
    assert not resumed.stopped and resumed.steps == 12
    assert stopped.losses + resumed.losses == full.losses


def test_gradient_checkpointing_gives_the_same_losses_and_weights(tmp_path):
    cfg = SFTConfig(steps=6, eval_problems=0, checkpoint_every=0, **LEVEL_ONE)
    runs = str(tmp_path)
    plain = train(cfg, SFTSpec("addition", seed=4, runs_dir=runs, quiet=True))
    recomputed = train(
        replace(cfg, gradient_checkpointing=True), SFTSpec("addition", seed=4, runs_dir=runs, quiet=True)
    )
    assert recomputed.model.gradient_checkpointing and not plain.model.gradient_checkpointing
    np.testing.assert_allclose(recomputed.losses, plain.losses, rtol=1e-6)
    for p, q in zip(recomputed.model.parameters(), plain.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


def test_bf16_sft_learns_about_as_fast_as_fp32(tmp_path):
    cfg = SFTConfig(steps=40, eval_problems=0, checkpoint_every=0, **LEVEL_ONE)
    spec = SFTSpec("addition", seed=5, runs_dir=str(tmp_path), quiet=True)
    fp32, bf16 = train(cfg, spec), train(replace(cfg, precision="bf16"), spec)
    assert all(math.isfinite(loss) for loss in bf16.losses) and bf16.losses != fp32.losses
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())
    # the first loss is the same untrained model on the same batch, rounded differently
    assert bf16.losses[0] == pytest.approx(fp32.losses[0], rel=0.02)
    assert np.mean(bf16.losses[-5:]) < 0.5 * np.mean(bf16.losses[:5])
    assert np.mean(bf16.losses[-5:]) == pytest.approx(np.mean(fp32.losses[-5:]), rel=0.2)


def tiny_gpt2(path: Path, transformers: ModuleType) -> Tokenizer:
    """Writes a small randomly initialised transformers GPT-2 with our tokenizer to `path`; returns the tokenizer."""
    tokenizer = build_tokenizer()
    config = transformers.GPT2Config(
        vocab_size=tokenizer.get_vocab_size(), n_embd=32, n_layer=2, n_head=4, n_positions=128, bos_token_id=1,
        eos_token_id=EOS_ID,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save(str(path / "tokenizer.json"))
    return tokenizer


def test_a_transformers_model_fine_tunes_with_gradient_checkpointing(tmp_path):
    """sft --model on a GPT-2 directory: transformers' own checkpointing is switched on and changes no loss."""
    transformers = pytest.importorskip("transformers")
    tokenizer = tiny_gpt2(tmp_path / "gpt2", transformers)
    cfg = SFTConfig(steps=4, eval_problems=0, checkpoint_every=0, **LEVEL_ONE)
    spec = SFTSpec("addition", seed=6, model=str(tmp_path / "gpt2"), runs_dir=str(tmp_path / "runs"), quiet=True)
    plain = train(cfg, spec)
    recomputed = train(replace(cfg, gradient_checkpointing=True), spec)
    assert recomputed.model.hf.is_activation_checkpointing and not plain.model.hf.is_activation_checkpointing
    np.testing.assert_allclose(recomputed.losses, plain.losses, rtol=1e-6)
    assert plain.losses[-1] < plain.losses[0]
    saved = load_causal_lm(recomputed.checkpoint)
    ids = torch.tensor([tokenizer.encode("Q: 3+4=\n3+4=7").ids])
    torch.testing.assert_close(saved(ids), recomputed.model.eval()(ids), rtol=0, atol=0)  # eval: no dropout


def test_lora_on_a_transformers_model_saves_merged_weights_and_resumes_exactly(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("peft")
    tokenizer = tiny_gpt2(tmp_path / "gpt2", transformers)
    cfg = SFTConfig(steps=6, eval_problems=0, checkpoint_every=0, lora_rank=4, **LEVEL_ONE)
    spec = SFTSpec("addition", seed=7, model=str(tmp_path / "gpt2"), runs_dir=str(tmp_path / "runs"), quiet=True)
    whole = train(cfg, spec)
    assert whole.losses[-1] < whole.losses[0]
    trained = [n for n, p in whole.model.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n for n in trained)
    saved = transformers.AutoModelForCausalLM.from_pretrained(whole.checkpoint).eval()  # merged: no peft needed
    ids = torch.tensor([tokenizer.encode("Q: 3+4=\n3+4=7").ids])
    with torch.no_grad():
        torch.testing.assert_close(saved(ids).logits, whole.model.eval()(ids), rtol=0, atol=1e-5)
    first = train(replace(cfg, steps=3), spec)
    resumed = train(cfg, spec, first.run_dir)
    assert first.losses + resumed.losses == whole.losses
    with pytest.raises(UserError, match="LoRA adapts a loaded model: pass --model"):
        train(cfg, SFTSpec("addition", runs_dir=str(tmp_path / "runs"), quiet=True))


def test_a_huge_learning_rate_stops_the_run_without_saving_it(tmp_path):
    cfg = SFTConfig(steps=5, eval_problems=0, **{**LEVEL_ONE, "learning_rate": 1e30})
    with pytest.raises(Diverged, match=r"^training diverged at step \d \(loss .*\); .*learning_rate \(now 1e\+30\)"):
        train(cfg, SFTSpec("addition", seed=0, runs_dir=str(tmp_path), quiet=True))
    assert not any(tmp_path.iterdir())  # a new run with no checkpoint yet is removed


@pytest.mark.parametrize("bad", ["loss", "weights"])
def test_a_resumed_run_that_diverges_keeps_its_last_good_checkpoint(tmp_path, monkeypatch, bad):
    spec = SFTSpec("addition", seed=0, runs_dir=str(tmp_path), quiet=True)
    first = train(SFTConfig(steps=2, eval_problems=0, **LEVEL_ONE), spec)
    saved = {path: path.read_bytes() for path in first.run_dir.rglob("*.safetensors")}
    step = sft.optimizer_step

    def inf_weight_after_step(model, *args, **kwargs):
        loss = step(model, *args, **kwargs)
        next(model.parameters()).data[0, 0] = math.inf  # as a huge learning rate times a finite step would make it
        return loss

    if bad == "loss":
        monkeypatch.setattr(sft, "sft_loss", lambda model, batch: sft_loss(model, batch) * math.nan)
    else:
        monkeypatch.setattr(sft, "optimizer_step", inf_weight_after_step)
    measured = "loss nan, gradient norm nan" if bad == "loss" else "a weight is not finite"
    with pytest.raises(Diverged, match=f"^training diverged at step 3 \\({measured}\\); nothing after the last"):
        train(SFTConfig(steps=4, eval_problems=0, checkpoint_every=1, **LEVEL_ONE), spec, first.run_dir)
    assert {path: path.read_bytes() for path in first.run_dir.rglob("*.safetensors")} == saved
