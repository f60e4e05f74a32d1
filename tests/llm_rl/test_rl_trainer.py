"""RL fine-tuning: the Kimi surrogate's gradient against REINFORCE and the paper's eq. 3 expression on a toy policy,
GRPO and RLOO advantages by hand through their objectives, the tau log Z estimators, prioritized sampling
frequencies, the curriculum's advance, a seeded run on the easiest addition level that raises the mean reward, and a
resumed run that continues exactly like an uninterrupted one; with partial rollouts, the same learning threshold,
a resume that keeps the unfinished responses, and a loss mask that keeps only the segment finishing each response."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from llm_rl.evaluate import text_codec
from llm_rl.experience import Experience, collect_partial, start_groups
from llm_rl.hf_io import load_pretrained
from llm_rl.lora import BLOCK_LINEARS
from llm_rl.objectives import (
    grpo_objective,
    kimi_objective,
    mean_reward_log_partition,
    rloo_objective,
    soft_log_partition,
)
from llm_rl.partial_rollouts import PartialRolloutConfig, UnfinishedGroups
from llm_rl.rl_config import RLConfig, RLSpec
from llm_rl.rl_trainer import train
from llm_rl.sampling import SamplingConfig
from llm_rl.sampling_strategies import CurriculumSampler, PrioritizedSampler, SuccessRates, make_sampler
from llm_rl.tasks import get_task
from rl.checkpoint import load_checkpoint, unflatten_state
from rl.errors import UserError

TOKENS = torch.tensor([[0, 2, 1], [1, 1, 0], [2, 0, 0], [0, 0, 2], [1, 2, 2], [2, 2, 1]])  # (B, L), B = P * G = 2 * 3
MASK = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 1], [1, 1, 0]], dtype=torch.bool)


pytestmark = pytest.mark.usefixtures("one_thread")


def toy_log_probs(theta: torch.Tensor) -> torch.Tensor:
    """A toy policy: token t drawn from softmax(theta[t]) whatever came before; log pi (B, L), 0 at padding."""
    log_pi = theta.log_softmax(-1)  # (L, V)
    per_token = log_pi[torch.arange(TOKENS.shape[1]), TOKENS]  # (B, L)
    return torch.where(MASK, per_token, torch.zeros_like(per_token))


def toy_experience(rewards: torch.Tensor, old_log_probs: torch.Tensor) -> Experience:
    zeros = torch.zeros_like(rewards)
    lengths = MASK.sum(1)
    return Experience(TOKENS, MASK, MASK, rewards, rewards > 0, old_log_probs.detach(), None, [], zeros, lengths,
                      ["stop"] * len(TOKENS), int(lengths.sum()))  # fmt: skip


def gradient(loss_of_theta, theta: torch.Tensor) -> torch.Tensor:
    theta = theta.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_of_theta(theta), theta)
    return grad


REWARDS = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])  # (P, G)


def test_kimi_gradient_at_the_reference_is_reinforce_with_the_mean_reward_baseline():
    torch.manual_seed(0)
    theta_i = torch.randn(3, 3, dtype=torch.float64)
    cfg = RLConfig(tau=0.3)
    old = toy_log_probs(theta_i)
    kimi = gradient(lambda th: kimi_objective(toy_log_probs(th), toy_experience(REWARDS, old), cfg), theta_i)
    # -2 tau (1/B) sum_b (r_b - mean of its group) grad log pi(y_b), the log-prob summed over the response's tokens
    baseline = torch.tensor([[1 / 3] * 3, [2 / 3] * 3], dtype=torch.float64)
    centred = (REWARDS.double() - baseline).reshape(-1)
    reinforce = gradient(lambda th: -2 * 0.3 * (centred * toy_log_probs(th).sum(1)).mean(), theta_i)
    torch.testing.assert_close(kimi, reinforce)
    assert kimi.abs().sum() > 1e-3


def test_kimi_gradient_is_proportional_to_the_papers_expression_away_from_the_reference():
    torch.manual_seed(1)
    theta_i = torch.randn(3, 3, dtype=torch.float64)
    theta = theta_i + 0.5 * torch.randn(3, 3, dtype=torch.float64)
    tau = 0.7
    old = toy_log_probs(theta_i).detach()
    kimi = gradient(
        lambda th: kimi_objective(toy_log_probs(th), toy_experience(REWARDS, old), RLConfig(tau=tau)), theta
    )
    mean_r = REWARDS.double().mean(1, keepdim=True).expand(2, 3).reshape(-1)
    r = REWARDS.double().reshape(-1)

    def paper(th: torch.Tensor) -> torch.Tensor:
        # Eq. 3 (Kimi k1.5): 1/k sum_j [grad log pi(y_j|x) (r_j - mean r) - tau / 2 grad (log pi / pi_i)^2]
        seq = toy_log_probs(th).sum(1)  # (B,)
        return ((r - mean_r) * seq - tau / 2 * (seq - old.sum(1)) ** 2).mean()

    expected = gradient(paper, theta)
    torch.testing.assert_close(kimi, -2 * tau * expected)
    assert expected.abs().sum() > 1e-3


def test_log_partition_estimators_by_hand():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    assert mean_reward_log_partition(rewards, 0.5).tolist() == [[0.5] * 4]
    soft = 0.5 * math.log((2 * math.exp(2.0) + 2) / 4)  # tau log mean exp(r / tau)
    torch.testing.assert_close(soft_log_partition(rewards, 0.5), torch.full((1, 4), soft))
    assert soft > 0.5  # the soft estimate lies above the mean (Jensen)


def test_grpo_and_rloo_advantages_by_hand_through_their_objectives():
    torch.manual_seed(2)
    theta = torch.randn(3, 3, dtype=torch.float64)
    old = toy_log_probs(theta)
    lengths = MASK.sum(1).double()  # (B,)
    # GRPO: group 1 r = (1, 0, 0): mean 1/3, sample std sqrt(1/3); group 2 r = (1, 1, 0): mean 2/3, same std.
    s = math.sqrt(1 / 3)
    grpo_adv = torch.tensor([2 / 3 / s, -1 / 3 / s, -1 / 3 / s, 1 / 3 / s, 1 / 3 / s, -2 / 3 / s], dtype=torch.float64)
    cfg = RLConfig(clip_range=0.2)
    grpo = gradient(lambda th: grpo_objective(toy_log_probs(th), toy_experience(REWARDS, old), cfg), theta)
    by_hand = gradient(lambda th: -(grpo_adv * toy_log_probs(th).sum(1) / lengths).mean(), theta)
    torch.testing.assert_close(grpo, by_hand, rtol=1e-5, atol=1e-7)  # the objective's std has eps = 1e-6
    # RLOO: baselines are the other two rewards' mean: (0, 0.5, 0.5) and (0.5, 0.5, 1) -> A = (1, -.5, -.5, .5, .5, -1)
    rloo_adv = torch.tensor([1.0, -0.5, -0.5, 0.5, 0.5, -1.0], dtype=torch.float64)
    rloo = gradient(lambda th: rloo_objective(toy_log_probs(th), toy_experience(REWARDS, old), cfg), theta)
    by_hand = gradient(lambda th: -(rloo_adv * toy_log_probs(th).sum(1)).sum() / lengths.sum(), theta)
    torch.testing.assert_close(rloo, by_hand)


def test_grpo_clips_a_ratio_that_moved_past_the_range_in_its_advantages_direction():
    torch.manual_seed(3)
    theta = torch.randn(3, 3, dtype=torch.float64)
    old = toy_log_probs(theta) - 1.0  # every ratio is e > 1.2: positive advantages get no gradient
    rewards = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    grad = gradient(lambda th: grpo_objective(toy_log_probs(th), toy_experience(rewards, old), RLConfig()), theta)
    s = math.sqrt(1 / 3)
    adv = torch.tensor([0, 0, -2 / 3 / s, 0, -1 / 3 / s, -1 / 3 / s], dtype=torch.float64)  # negatives only
    lengths = MASK.sum(1).double()
    expected = gradient(lambda th: -(adv * (toy_log_probs(th) - old).exp().mul(MASK).sum(1) / lengths).mean(), theta)
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-7)


def test_success_rates_are_moving_averages_by_hand():
    rates = SuccessRates(3, decay=0.5)
    rates.update(np.array([0, 2, 0]), np.array([1.0, 0.5, 0.5]))
    assert rates.rates.tolist() == [0.5 * (0.5 * 0 + 0.5 * 1.0) + 0.5 * 0.5, 0.0, 0.25]
    assert rates.attempts.tolist() == [2, 0, 1]


def test_prioritized_sampling_frequencies_follow_one_minus_success():
    sampler = PrioritizedSampler(4, floor=0.05)
    sampler.success.rates = np.array([0.0, 0.5, 1.0, 0.75])
    expected = np.array([1.05, 0.55, 0.05, 0.3]) / 1.95
    np.testing.assert_allclose(sampler.probabilities(), expected)
    draws = sampler.sample(40_000, np.random.default_rng(0))
    np.testing.assert_allclose(np.bincount(draws, minlength=4) / 40_000, expected, atol=0.01)


def test_curriculum_starts_easy_and_advances_at_the_success_rate():
    levels = [1, 1, 2, 2, 3]
    sampler = CurriculumSampler(levels, decay=0.5, advance_at=0.8)
    rng = np.random.default_rng(0)
    assert set(sampler.sample(200, rng).tolist()) == {0, 1}
    for expected_rate in (0.5, 0.75):  # 0.5 * rate + 0.5 * 1.0, below 0.8: stays
        sampler.update(np.array([0, 1]), np.array([1.0, 1.0]))
        assert sampler.current_level == 1 and sampler.level_rate == pytest.approx(expected_rate)
    sampler.update(np.array([4]), np.array([1.0]))  # a harder problem's success does not count for level 1
    assert sampler.current_level == 1
    sampler.update(np.array([0]), np.array([1.0]))  # 0.875 >= 0.8
    assert sampler.current_level == 2 and sampler.level_rate == 0.0
    assert set(sampler.sample(300, rng).tolist()) == {0, 1, 2, 3}
    restored = make_sampler("curriculum", levels, 0.5, 0.05, 0.8)
    restored.load_state_dict(sampler.state_dict())
    assert restored.current_level == 2 and restored.success.rates.tolist() == sampler.success.rates.tolist()


LEVEL_ONE = dict(levels=(1,), problems_per_iteration=4, samples_per_problem=8, max_new_tokens=24, eval_problems=0,
                 log_every=100, sample_texts=0, pool_size=4, sampler="uniform", learning_rate=1e-3)  # fmt: skip


def test_kimi_raises_the_mean_reward_on_the_easiest_level(warm_model: str, tmp_path):
    cfg = RLConfig(iterations=20, checkpoint_every=0, **LEVEL_ONE)
    result = train(cfg, RLSpec("kimi", warm_model, "addition", seed=0, runs_dir=str(tmp_path), quiet=True))
    first, last = np.mean(result.mean_rewards[:5]), np.mean(result.mean_rewards[-5:])  # seed 0: 0.42 -> 0.79
    assert first < 0.7 and last > 0.75 and last > first + 0.15, (first, last)


def test_resume_continues_like_an_uninterrupted_run(warm_model: str, tmp_path):
    spec = RLSpec("rloo", warm_model, "addition", seed=1, runs_dir=str(tmp_path), quiet=True)
    whole = train(RLConfig(iterations=3, **LEVEL_ONE), spec)
    first = train(RLConfig(iterations=2, **LEVEL_ONE), spec)
    resumed = train(RLConfig(iterations=3, **LEVEL_ONE), spec, resume=first.run_dir)
    assert resumed.mean_rewards == whole.mean_rewards[2:]
    for p, q in zip(resumed.model.parameters(), whole.model.parameters(), strict=True):
        torch.testing.assert_close(p, q)


PARTIAL = dict(partial_rollouts=True, segment_tokens=8, exclude_earlier_segments=False)
"""Level-1 responses are about 20 tokens: most take three iterations of 8 tokens."""


def test_kimi_with_partial_rollouts_raises_the_mean_reward_and_logs(warm_model: str, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = RLConfig(iterations=45, checkpoint_every=0, **LEVEL_ONE, **PARTIAL)
    result = train(cfg, RLSpec("kimi", warm_model, "addition", seed=0, runs_dir=str(tmp_path), quiet=True))
    assert 10 <= len(result.mean_rewards) < 45  # trained only in the iterations in which groups finished
    first, last = np.mean(result.mean_rewards[:3]), np.mean(result.mean_rewards[-3:])  # seed 0: 0.46 -> 0.78
    assert first < 0.7 and last > 0.75 and last > first + 0.15, (first, last)
    events = EventAccumulator(str(result.run_dir)).Reload()
    assert len(events.Scalars("reward/mean")) == len(result.mean_rewards)
    unfinished = [e.value for e in events.Scalars("completions/unfinished_groups")]
    assert len(unfinished) == 45 and max(unfinished) == 4  # all four groups waited for their next segment
    assert "completions/repetition_ratio" in events.Tags()["scalars"]


def test_resume_keeps_the_unfinished_partial_rollouts(warm_model: str, tmp_path):
    spec = RLSpec("kimi", warm_model, "addition", seed=1, runs_dir=str(tmp_path), quiet=True)
    whole = train(RLConfig(iterations=5, **LEVEL_ONE, **PARTIAL), spec)
    first = train(RLConfig(iterations=2, **LEVEL_ONE, **PARTIAL), spec)
    assert first.unfinished.groups, "no response outlived the cut; the test would not test the saved rollouts"
    arrays, meta = load_checkpoint(first.run_dir)
    saved = UnfinishedGroups()
    saved.load_state_dict(unflatten_state(meta["unfinished"], arrays))
    before = [(g.index, r.token_ids, r.segments, r.log_probs) for g in first.unfinished.groups for r in g.rollouts]
    assert before == [(g.index, r.token_ids, r.segments, r.log_probs) for g in saved.groups for r in g.rollouts]
    resumed = train(RLConfig(iterations=5, **LEVEL_ONE, **PARTIAL), spec, resume=first.run_dir)
    assert first.mean_rewards + resumed.mean_rewards == whole.mean_rewards
    for p, q in zip(resumed.model.parameters(), whole.model.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_partial_rollout_loss_mask_keeps_only_the_segment_that_finished_each_response(warm_model: str):
    model, tokenizer = load_pretrained(warm_model, dtype=torch.float32)
    codec, task = text_codec(model, tokenizer), get_task("addition")
    rng = np.random.default_rng(0)
    pool = [task.sample(rng, 1) for _ in range(3)]
    sampling = SamplingConfig(24, 1.0, stop_token_ids=codec.stop_ids)
    partial = PartialRolloutConfig(segment_tokens=7, max_tokens=24, exclude_earlier_segments=True)
    groups = start_groups(np.array([2, 0, 1]), pool, codec, 2, torch.Generator().manual_seed(0))
    unfinished, iteration, exp = UnfinishedGroups(), 0, None
    while exp is None:
        exp, indices = collect_partial(model, None, unfinished, groups if iteration == 0 else [], codec, task.check,
                                       sampling, partial, 0.0, iteration)  # fmt: skip
        iteration += 1
    assert iteration >= 3 and set(indices) <= {0, 1, 2}  # level-1 responses outlive two segments of 7
    finished = [g for g in groups if g.index in indices]
    prompt_width = exp.input_ids.shape[1] - int(exp.lengths.max())
    for row, rollout in enumerate(r for g in finished for r in g.rollouts):
        n = len(rollout.token_ids)
        last = [segment == rollout.segments[-1] for segment in rollout.segments]  # the finishing segment's tokens
        assert (
            exp.lengths[row] == n and exp.input_ids[row, prompt_width : prompt_width + n].tolist() == rollout.token_ids
        )
        assert exp.completion_mask[row, prompt_width : prompt_width + n].tolist() == last
        assert (
            not exp.completion_mask[row, :prompt_width].any() and not exp.completion_mask[row, prompt_width + n :].any()
        )
        assert not exp.old_log_probs[row][~exp.completion_mask[row]].any()
    assert any(len(set(r.segments)) > 1 for g in finished for r in g.rollouts)  # some responses span segments


def test_bf16_with_gradient_checkpointing_trains_and_logs_finite_losses(warm_model: str, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    spec = RLSpec("kimi", warm_model, "addition", seed=0, runs_dir=str(tmp_path), quiet=True)
    initial = [p.detach().clone() for p in load_pretrained(warm_model)[0].parameters()]
    result = train(RLConfig(iterations=2, precision="bf16", gradient_checkpointing=True, **LEVEL_ONE), spec)
    assert result.model.gradient_checkpointing and len(result.mean_rewards) == 2
    losses = [e.value for e in EventAccumulator(str(result.run_dir)).Reload().Scalars("losses/policy_loss")]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses) and any(loss != 0 for loss in losses)
    trained = list(result.model.parameters())
    assert all(p.dtype == torch.float32 for p in trained)  # autocast leaves the master weights in float32
    assert sum(not torch.equal(p, q) for p, q in zip(trained, initial, strict=True)) == len(initial)
    fp32 = train(RLConfig(iterations=2, **LEVEL_ONE), spec)  # same seed: bf16 really changed the arithmetic
    assert any(not torch.equal(p, q) for p, q in zip(trained, fp32.model.parameters(), strict=True))


def test_gradient_checkpointing_gives_the_same_parameters(warm_model: str, tmp_path):
    spec = RLSpec("grpo", warm_model, "addition", seed=3, runs_dir=str(tmp_path), quiet=True)
    plain = train(RLConfig(iterations=2, **LEVEL_ONE), spec)
    recomputed = train(RLConfig(iterations=2, gradient_checkpointing=True, **LEVEL_ONE), spec)
    assert recomputed.model.gradient_checkpointing and not plain.model.gradient_checkpointing
    assert recomputed.mean_rewards == plain.mean_rewards
    initial = load_pretrained(warm_model)[0].parameters()
    for p, q, p0 in zip(recomputed.model.parameters(), plain.model.parameters(), initial, strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
        assert not torch.equal(p, p0)  # every parameter moved, so the comparison compares something


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="samples_per_problem"):
        RLConfig(samples_per_problem=1)
    with pytest.raises(ValueError, match="log_z"):
        RLConfig(log_z="median")
    with pytest.raises(ValueError, match="sampler"):
        RLConfig(sampler="random")
    with pytest.raises(UserError, match="unknown precision 'fp16'"):
        RLConfig(precision="fp16")


TAGS = ("reward/mean", "reward/accuracy", "reward/length_penalty", "completions/mean_length",
        "completions/clipped_ratio", "losses/policy_loss", "charts/log_ratio", "charts/entropy", "perf/tokens_per_s",
        "eval/accuracy")  # fmt: skip


def test_cli_train_writes_tags_checkpoint_and_resumes(warm_model: str, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from rl.cli import main

    quick = ["levels=[1]", "problems_per_iteration=2", "samples_per_problem=2", "max_new_tokens=24", "pool_size=4",
             "eval_problems=2", "eval_every=1", "log_every=1", "length_penalty_weight=0.5",
             "length_penalty_warmup=1"]  # fmt: skip
    args = ["llm", "train", "--algo", "grpo", "--init", warm_model, "--task", "addition", "--runs-dir", str(tmp_path)]
    assert main([*args, "--quiet", "--set", "iterations=2", "kl_coef=0.1", *quick]) == 0
    (run_dir,) = tmp_path.iterdir()
    assert capsys.readouterr().out.strip().endswith(str(run_dir / "model"))
    assert (run_dir / "model" / "model.safetensors").is_file() and (run_dir / "checkpoint.safetensors").is_file()
    assert main(["llm", "train", "--resume", str(run_dir), "--quiet", "--set", "iterations=3"]) == 0
    events = EventAccumulator(str(run_dir)).Reload()
    for tag in TAGS:
        assert tag in events.Tags()["scalars"], tag
    # sorted: two event files written in the same second are read in the order of their names' counters (".10" first)
    assert sorted(e.step for e in events.Scalars("reward/mean")) == [1, 2, 3]
    assert "completions/text_summary" in events.Tags()["tensors"]


def test_lora_run_trains_adapters_saves_a_merged_model_and_resumes_exactly(warm_model: str, tmp_path):
    pytest.importorskip("peft")
    spec = RLSpec("kimi", warm_model, "addition", seed=2, runs_dir=str(tmp_path), quiet=True)
    lora = dict(lora_rank=4, lora_alpha=8.0, **LEVEL_ONE)
    whole = train(RLConfig(iterations=3, **lora), spec)
    trained = [n for n, p in whole.model.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n for n in trained)
    initial, saved = (
        load_pretrained(warm_model)[0].state_dict(),
        load_pretrained(whole.run_dir / "model")[0].state_dict(),
    )
    assert saved.keys() == initial.keys()  # the merged model has the original shape
    moved = {name for name in saved if not torch.equal(saved[name], initial[name])}
    assert moved and all(name.split(".")[-2] in BLOCK_LINEARS for name in moved)  # only the adapted linears changed
    first = train(RLConfig(iterations=2, **lora), spec)
    resumed = train(RLConfig(iterations=3, **lora), spec, resume=first.run_dir)
    assert first.mean_rewards + resumed.mean_rewards == whole.mean_rewards
    for (name, p), q in zip(resumed.model.named_parameters(), whole.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, msg=name)
