"""Reinforcement learning of a language model on verifiable problems: Kimi k1.5's online mirror descent, GRPO, RLOO.

Kimi k1.5 (Kimi Team 2025, "Kimi k1.5: Scaling Reinforcement Learning with LLMs", section 2.3.2). Iteration i takes
the current policy pi_theta_i as the reference, samples a batch of problems x and k responses y_1..y_k for each, and
scores each response with the verifier (r = 1 correct, 0 not). It then takes several gradient steps on

    L(theta) = mean_x 1/k sum_j (r_j - tau log Z - tau (log pi_theta(y_j|x) - log pi_theta_i(y_j|x)))^2     (eq. 3)

(`rl.pg_losses.mirror_descent_loss`), the log-ratio summed over the response's tokens, with tau log Z estimated from
the k samples by their mean reward (`log_z = "mean"`, the paper's choice) or by tau log(1/k sum_j exp(r_j / tau))
(`log_z = "soft"`). At theta = theta_i the gradient is -2 tau (1/k) sum_j (r_j - mean r) grad log pi_theta(y_j|x):
REINFORCE with the mean-reward baseline; away from theta_i the squared term pulls back towards pi_theta_i. No value
network. Kimi k1.5 resets the optimiser at the start of every iteration (`reset_optimizer`, off by default here).
Length penalty (section 2.3.3): after `length_penalty_warmup` iterations, `length_penalty_weight` times
`llm_rl.rewards.kimi_length_reward` of each group is added to the reward. Problem sampling (section 2.3.4):
`llm_rl.sampling_strategies` (uniform, curriculum, prioritized). Partial rollouts (section 2.6.2, `partial_rollouts`):
each iteration a response grows by at most `segment_tokens`; unfinished ones wait and go on in the next iteration, a
group of k is trained on once all k have finished, looping responses are stopped and get `repetition_penalty`
(`llm_rl.experience.collect_partial`, `llm_rl.partial_rollouts`); the waiting responses are in the checkpoint.

The same loop trains two baselines; only the objective differs (`OBJECTIVES`):
    grpo  (Shao et al. 2024, section 4.1): A = (r - group mean) / group std, PPO's clipped surrogate averaged per
          sequence, plus kl_coef * k3 KL to the frozen initial model.
    rloo  (Ahmadian et al. 2024): A = r - mean of the other k - 1 rewards, the importance-weighted REINFORCE
          surrogate pi / pi_old * A (equal to REINFORCE at the first step), token mean.

Deviations and choices:
1. The training problems are a fixed pool (drawn once from the task's train split, or read from --data), so that the
   samplers can track each problem's success rate.
2. pi_theta_i's log-probabilities are recomputed with one forward pass after sampling (the sampler's cached ones
   differ by float error), so the log-ratio is exactly 0 at the first step.
3. `charts/entropy` is the Monte Carlo estimate mean(-log pi(y_t)) over the sampled tokens (unbiased at
   temperature 1), not the exact entropy of each next-token distribution.
4. The optimiser is not reset by default: right after a reset Adam's first step moves every parameter by about
   the learning rate in the direction of its gradient's sign, however noisy, and on the tiny model that made the
   reward fall (level-1 addition, 4 problems: 0.55 -> 0.86 in 20 iterations without resets; falling with them).
5. Partial rollouts keep every segment in the loss by default (`exclude_earlier_segments = False`; the paper may
   leave earlier segments out). The reward judges the whole response, so training only the last segment pushes
   down the correct copying of a wrong earlier step ("3+4=8 ... Answer: 8") and never corrects the step itself: on
   level-1 addition with 8-token segments excluding them took the mean reward from 0.5 to 0.0 in 15 updates, while
   keeping them learns exactly as whole responses do (0.46 -> 0.78).
6. With partial rollouts new problems only take the places of finished groups, so each iteration generates for
   problems_per_iteration groups at most, and an iteration in which no group finishes makes no update.
7. The default learning rate is 2e-5, not 1e-4. From the default `rl llm sft` warm-up (held-out greedy accuracy
   0.657 on `rl llm eval`'s 300 problems; pass@8 at temperature 1 is 0.75, about the most that sharpening the
   sampled policy could reach) no 60-iteration run at 1e-4 raised it: 0.597 with the other defaults,
   0.653 with 1 update per iteration, 0.623 on levels 4-6 only, 0.563 at temperature 0.5, 0.573 at 1.5. One
   iteration fits its 16 problems (at 3e-4 their sample accuracy rose 0.16 -> 0.26) but does not carry over to
   held-out ones, and easy levels drift (level 1: 1.00 -> 0.88). At 2e-5 (0.680 after 60 iterations) and 3e-5
   (0.657 after 150) held-out accuracy stays about where it was: the default no longer harms, but does not gain
   either. From a warm-up with bare answers among its examples (`rl llm sft --set answer_only_fraction=0.3`) the
   default run can gain by learning to work problems out: seed 0 0.620 -> 0.790 (at 5e-5 for 120 iterations:
   0.747), but seed 1 0.620 -> 0.630 and seed 2 0.317 -> 0.363 (`llm_rl.sft`, choice 5).
8. Not implemented: long2short RL as part of this loop (section 2.4; `llm_rl.long2short` has merging, shortest
   rejection sampling and the capped length reward).
9. Scale: `precision = "bf16"` runs sampling, the log-prob passes and the evaluations under bfloat16 autocast over
   float32 weights (`llm_rl.precision`); `gradient_checkpointing` recomputes each block in the backward pass. The
   policy is any local Hugging Face causal LM (`llm_rl.causal_lm`), with its dropout switched off (GPT-2 has some)
   so that the training pass scores the responses exactly as the sampler did. Under `torchrun --nproc-per-node N`
   each process samples and trains on P / N of the problems and DDP averages the gradients (`llm_rl.distributed`;
   `parallelism = "fsdp"` shards parameters, gradients and Adam state with FSDP2 instead); every response draws its
   tokens from its own generator, so N processes train as one does, up to float rounding.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import Tensor

from llm_rl.causal_lm import CausalLM
from llm_rl.data import load_problems
from llm_rl.distributed import (
    PARALLELISMS,
    Ranks,
    all_gather_rows,
    any_rank,
    broadcast_path,
    close,
    data_parallel,
    gathered,
    init_ranks,
    shard,
    token_share,
)
from llm_rl.evaluate import TextCodec, held_out_problems, longest_prompt, text_codec
from llm_rl.experience import Check, Experience, collect, collect_partial, start_groups
from llm_rl.lora import LoRAConfig, trainable_parameters, with_lora
from llm_rl.partial_rollouts import PartialRolloutConfig, UnfinishedGroups
from llm_rl.precision import autocast, check_precision
from llm_rl.rl_run import (
    Learner,
    UpdateStats,
    evaluate_and_log,
    iteration_totals,
    load_policy,
    log_iteration,
    progress_line,
    restore_state,
    save_state,
)
from llm_rl.sampling import SamplingConfig, check_context, row_generators
from llm_rl.sampling_strategies import SAMPLERS, make_sampler
from llm_rl.sft import set_gradient_checkpointing, stop_signals
from llm_rl.tasks import Problem, Task, get_task
from rl.advantages import group_relative_advantages, leave_one_out_advantages
from rl.checkpoint import check_budget_left
from rl.config import config_dict
from rl.errors import UserError
from rl.pg_losses import clipped_surrogate_loss, kl_k3, mirror_descent_loss, sequence_mean, surrogate_loss, token_mean
from rl.run_logger import RunLogger, SilentLogger, new_run_dir
from rl.seeding import seed_everything

ALGOS = ("kimi", "grpo", "rloo")


@dataclass(frozen=True)
class RLConfig:
    """Hyperparameters of RL fine-tuning; the defaults suit the built-in tiny model on addition, on two CPU cores."""

    iterations: int = 60
    """Sampling iterations (each followed by `updates_per_iteration` gradient steps)."""
    problems_per_iteration: int = 16
    """Problems sampled per iteration (P)."""
    samples_per_problem: int = 8
    """Responses sampled per problem (k, the group size G); at least 2."""
    updates_per_iteration: int = 4
    """Gradient steps on each iteration's responses (full batch)."""
    learning_rate: float = 2e-5
    """Adam step size (deviation 7: larger steps lowered held-out accuracy)."""
    adam_betas: tuple[float, float] = (0.9, 0.99)
    """Adam's moment decay rates."""
    reset_optimizer: bool = False
    """Reset Adam's moments at the start of every iteration, as Kimi k1.5 does (off by default: deviation 4)."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global norm."""
    temperature: float = 1.0
    """Sampling temperature of the responses (1 samples the policy itself, as the derivations assume)."""
    max_new_tokens: int = 128
    """Longest response; longer ones are cut (reason "length") and usually score 0."""
    tau: float = 0.5
    """Kimi: strength of the pull towards the iteration's reference policy pi_theta_i."""
    log_z: str = "mean"
    """Kimi: estimate of tau log Z from the k rewards, "mean" (mean reward) or "soft" (tau log mean exp(r / tau))."""
    clip_range: float = 0.2
    """GRPO: PPO's clip epsilon of the probability ratio."""
    kl_coef: float = 0.0
    """GRPO: weight of the k3 KL penalty to the initial model (0 skips the reference model)."""
    length_penalty_weight: float = 0.0
    """Weight of Kimi's length reward added to the correctness reward (0 turns it off)."""
    length_penalty_warmup: int = 20
    """Iterations before the length reward is switched on."""
    sampler: str = "prioritized"
    """Problem sampling: uniform, curriculum or prioritized."""
    pool_size: int = 2000
    """Training problems drawn from the task (ignored with --data, whose rows are the pool)."""
    levels: tuple[int, ...] = ()
    """Task levels of the pool; empty means all of the task's levels."""
    success_decay: float = 0.5
    """Decay of the moving-average success rate tracked per problem."""
    priority_floor: float = 0.05
    """Prioritized sampling: added to every weight 1 - s_i so solved problems are still drawn now and then."""
    advance_at: float = 0.8
    """Curriculum: success rate at the current level that moves the curriculum up a level."""
    eval_every: int = 20
    """Iterations between held-out evaluations (and one before training and one at the end); 0: start and end."""
    eval_problems: int = 16
    """Held-out problems per level in each evaluation (the same every time); 0 skips evaluation."""
    log_every: int = 5
    """Iterations between progress lines."""
    sample_texts: int = 2
    """Sampled completions written to TensorBoard as text every `log_every` iterations."""
    checkpoint_every: int = 20
    """Iterations between checkpoints (and one at the end or on a stop signal); 0 saves only at the end."""
    partial_rollouts: bool = False
    """Generate responses over several iterations, at most segment_tokens tokens per iteration (section 2.6.2)."""
    segment_tokens: int = 64
    """Partial rollouts: tokens a response may add per iteration; max_new_tokens caps it over all iterations."""
    exclude_earlier_segments: bool = False
    """Partial rollouts: only the segment that finished a response counts in the loss (deviation 5)."""
    repetition_max_ngram: int = 8
    """Partial rollouts: longest repeating unit (tokens) the repeat detection looks for; 0 turns it off."""
    repetition_min_repeats: int = 4
    """Partial rollouts: a response ending in a unit repeated this many times in a row is stopped."""
    repetition_min_tokens: int = 16
    """Partial rollouts: ...if the repeating tail also spans at least this many tokens."""
    repetition_penalty: float = -1.0
    """Partial rollouts: added to the reward of a response stopped for repeating itself (0 turns it off)."""
    num_threads: int = 1
    """torch CPU threads (one suits the tiny model)."""
    device: str = "cpu"
    """Where the model trains ("cpu", "cuda")."""
    precision: str = "fp32"
    """fp32, or bf16: bfloat16 autocast of sampling and forward passes over float32 weights (llm_rl.precision)."""
    gradient_checkpointing: bool = False
    """Recompute each transformer block in the backward pass instead of keeping its activations (saves memory)."""
    parallelism: str = "ddp"
    """Under torchrun: ddp (a full copy of the model per process) or fsdp (FSDP2: each process holds 1/N of it)."""
    lora_rank: int = 0
    """Train LoRA adapters of this rank on the block linears instead of every weight (peft); 0 trains every weight."""
    lora_alpha: float = 16.0
    """LoRA: the adapters' update B A is scaled by lora_alpha / lora_rank."""
    lora_target_modules: tuple[str, ...] = ()
    """LoRA: names of the linear layers that get adapters; empty: every linear layer inside the blocks."""

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if min(self.iterations, self.problems_per_iteration, self.updates_per_iteration, self.max_new_tokens) < 1:
            raise ValueError("iterations, problems_per_iteration, updates_per_iteration, max_new_tokens must be >= 1")
        if self.samples_per_problem < 2:
            raise ValueError("samples_per_problem must be >= 2 (the baselines compare responses to one problem)")
        if min(self.log_every, self.num_threads, self.pool_size) < 1:
            raise ValueError("log_every, num_threads and pool_size must be >= 1")
        if min(self.eval_every, self.eval_problems, self.checkpoint_every, self.length_penalty_warmup) < 0:
            raise ValueError("eval_every, eval_problems, checkpoint_every and length_penalty_warmup must be >= 0")
        if self.learning_rate <= 0 or self.tau <= 0 or self.temperature <= 0:
            raise ValueError("learning_rate, tau and temperature must be > 0")
        if self.log_z not in LOG_PARTITION:
            raise ValueError(f"log_z must be one of {sorted(LOG_PARTITION)}, not {self.log_z!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, not {self.sampler!r}")
        if self.segment_tokens < 1 or self.repetition_max_ngram < 0 or self.repetition_min_tokens < 0:
            raise ValueError("segment_tokens must be >= 1, repetition_max_ngram and repetition_min_tokens >= 0")
        if self.repetition_min_repeats < 2:
            raise ValueError("repetition_min_repeats must be >= 2")
        if self.parallelism not in PARALLELISMS:
            raise ValueError(f"parallelism must be one of {PARALLELISMS}, not {self.parallelism!r}")
        if self.lora_rank < 0 or self.lora_alpha <= 0:
            raise ValueError("lora_rank must be >= 0 (0 turns LoRA off) and lora_alpha > 0")
        if not (0 <= self.success_decay < 1 and 0 < self.priority_floor <= 1 and 0 <= self.advance_at <= 1):
            raise ValueError("success_decay must be in [0, 1), priority_floor in (0, 1] and advance_at in [0, 1]")
        if not self.clip_range > 0 or self.kl_coef < 0 or self.sample_texts < 0:
            raise ValueError("clip_range must be > 0, kl_coef and sample_texts >= 0")

    @property
    def partial_rollout_config(self) -> PartialRolloutConfig:
        """The partial-rollout fields as `llm_rl.partial_rollouts.PartialRolloutConfig`."""
        return PartialRolloutConfig(
            self.segment_tokens, self.max_new_tokens, self.exclude_earlier_segments, self.repetition_max_ngram,
            self.repetition_min_repeats, self.repetition_min_tokens, self.repetition_penalty,
        )  # fmt: skip


@dataclass(frozen=True)
class RLSpec:
    """What to train, with which algorithm, on which problems, and where the run goes (the command line)."""

    algo: str
    """kimi, grpo or rloo."""
    init: str
    """Hugging Face model directory to start from (e.g. an `rl llm sft` run's model)."""
    task: str
    """Task whose verifier, training problems and held-out problems are used."""
    data: str | None = None
    """JSONL or Parquet file of training problems instead of the task's generator."""
    seed: int = 0
    """Seeds the pool, the sampling and the evaluation problems."""
    runs_dir: str = "runs"
    """Parent of the run directory."""
    quiet: bool = False
    """No progress lines."""


def mean_reward_log_partition(rewards: Tensor, tau: float) -> Tensor:
    """tau log Z estimated by the group's mean reward (Kimi k1.5's choice); (P, G) -> (P, G)."""
    return rewards.mean(dim=1, keepdim=True).expand_as(rewards)


def soft_log_partition(rewards: Tensor, tau: float) -> Tensor:
    """tau log Z = tau log (1/k sum_j exp(r_j / tau)), the sample estimate of Z; (P, G) -> (P, G)."""
    log_mean_exp = torch.logsumexp(rewards / tau, dim=1, keepdim=True) - math.log(rewards.shape[1])
    return (tau * log_mean_exp).expand_as(rewards)


LOG_PARTITION: dict[str, Callable[[Tensor, float], Tensor]] = {
    "mean": mean_reward_log_partition,
    "soft": soft_log_partition,
}


def kimi_objective(log_probs: Tensor, exp: Experience, cfg: RLConfig) -> Tensor:
    """Eq. 3's squared loss with tau log Z from the k rewards of each problem."""
    baselines = LOG_PARTITION[cfg.log_z](exp.rewards, cfg.tau).reshape(-1)  # (B,)
    rewards = exp.rewards.reshape(-1)  # (B,)
    return mirror_descent_loss(log_probs, exp.old_log_probs, rewards, baselines, cfg.tau, exp.completion_mask)


def grpo_objective(log_probs: Tensor, exp: Experience, cfg: RLConfig) -> Tensor:
    """Clipped surrogate with group-normalised advantages, per-sequence means, plus kl_coef * k3 KL."""
    advantages = group_relative_advantages(exp.rewards).reshape(-1, 1)  # (B, 1)
    mask = exp.completion_mask
    loss = clipped_surrogate_loss(log_probs, exp.old_log_probs, advantages, cfg.clip_range, mask, sequence_mean).loss
    if exp.ref_log_probs is not None and cfg.kl_coef > 0:
        loss = loss + cfg.kl_coef * sequence_mean(kl_k3(log_probs, exp.ref_log_probs), mask)
    return loss


def rloo_objective(log_probs: Tensor, exp: Experience, cfg: RLConfig) -> Tensor:
    """REINFORCE with the leave-one-out baseline, importance-weighted after the first step, token mean."""
    advantages = leave_one_out_advantages(exp.rewards).reshape(-1, 1)  # (B, 1)
    return surrogate_loss(log_probs, exp.old_log_probs, advantages, exp.completion_mask, token_mean)


Objective = Callable[[Tensor, Experience, RLConfig], Tensor]
OBJECTIVES: dict[str, Objective] = {"kimi": kimi_objective, "grpo": grpo_objective, "rloo": rloo_objective}


def update(policy: torch.nn.Module, model: CausalLM, optimizer: torch.optim.Optimizer, exp: Experience,
           objective: Objective, cfg: RLConfig, weight: float = 1.0) -> UpdateStats:  # fmt: skip
    """`updates_per_iteration` full-batch gradient steps on `weight` times the objective; `policy` is the model's
    `llm_rl.distributed.data_parallel` wrapper (DDP averages the gradients over the ranks in the backward pass)."""
    losses = []
    for _ in range(cfg.updates_per_iteration):
        with autocast(cfg.precision, cfg.device):
            log_probs = policy(exp.input_ids, exp.attention_mask, exp.completion_mask)  # (B, L)
        loss = weight * objective(log_probs, exp, cfg)  # float32: the logits are cast before the softmax
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad(), autocast(cfg.precision, cfg.device):
        log_probs = policy(exp.input_ids, exp.attention_mask, exp.completion_mask)
        log_ratio = ((log_probs - exp.old_log_probs) * exp.completion_mask).sum(1).mean().item()
    return UpdateStats(losses[0], log_ratio)


@dataclass
class RLResult:
    """What `train` returns: per-iteration curves and the held-out evaluations."""

    run_dir: Path
    model: CausalLM
    iterations: int
    mean_rewards: list[float] = field(default_factory=list)
    """Mean correctness of the trained responses, per iteration that trained (with partial rollouts not every one)."""
    evals: list[tuple[int, float]] = field(default_factory=list)
    """(iteration, held-out greedy accuracy)."""
    unfinished: UnfinishedGroups = field(default_factory=UnfinishedGroups)
    """Partial rollouts: the groups still being generated when the run ended (they are in the checkpoint)."""
    stopped: bool = False
    is_main: bool = True
    """False on the ranks other than rank 0 of a data-parallel run, which neither log nor save."""


def problem_pool(task: Task, spec: RLSpec, cfg: RLConfig) -> list[Problem]:
    """The training problems: the rows of --data, or `pool_size` train-split problems spread over the levels."""
    if spec.data is not None:
        return load_problems(spec.data)
    levels = cfg.levels or task.levels
    for level in levels:
        if level not in task.levels:
            raise UserError(f"{task.name} has no level {level}; set levels to some of {list(task.levels)}.")
    rng = np.random.default_rng(spec.seed + 2)
    return [task.sample(rng, levels[i % len(levels)], "train") for i in range(cfg.pool_size)]


def run_config(cfg: RLConfig, spec: RLSpec) -> dict:
    """What config.json records: enough to resume the run."""
    return {"spec": config_dict(spec), "rl_config": config_dict(cfg)}


def gather(learner: Learner, reference: CausalLM | None, pool: list[Problem], codec: TextCodec, check: Check,
           cfg: RLConfig, length_weight: float, iteration: int, ranks: Ranks) -> tuple[Experience | None,
           np.ndarray]:  # fmt: skip
    """This iteration's experience (this rank's share of the problems) and all its problems' pool indices: k
    responses to each of problems_per_iteration sampled problems, each from its own generator; with partial rollouts,
    the groups that finished (new problems take the free places)."""
    learner.model.eval()
    sampling = SamplingConfig(cfg.max_new_tokens, cfg.temperature, stop_token_ids=codec.stop_ids)
    k = cfg.samples_per_problem
    if not cfg.partial_rollouts:
        indices = learner.sampler.sample(cfg.problems_per_iteration, learner.rng)  # alike on every rank
        generators = row_generators(learner.generator, len(indices) * k)  # (P * G,) alike on every rank
        mine = shard(range(len(indices)), ranks)
        problems = [pool[indices[j]] for j in mine]
        with autocast(cfg.precision, cfg.device):
            exp = collect(learner.model, reference, problems, codec, check, k, sampling, length_weight,
                          [generators[j * k + i] for j in mine for i in range(k)])  # fmt: skip
        return exp, indices
    free = max(cfg.problems_per_iteration - len(learner.unfinished.groups), 0)
    groups = start_groups(learner.sampler.sample(free, learner.rng), pool, codec, k, learner.generator)
    with autocast(cfg.precision, cfg.device):
        exp, finished = collect_partial(learner.model, reference, learner.unfinished, groups, codec, check, sampling,
                                        cfg.partial_rollout_config, length_weight, iteration)  # fmt: skip
    return exp, np.array(finished, dtype=np.int64)


LOSS_MEAN_OVER = {"kimi": "sequences", "grpo": "sequences", "rloo": "tokens"}
"""What each objective averages over; a token mean is rescaled on each rank (`llm_rl.distributed.token_share`)."""


def new_learner(cfg: RLConfig, spec: RLSpec, resume: Path | None, ranks: Ranks, pool: list[Problem],
                rng: np.random.Generator) -> tuple[Learner, torch.nn.Module, Tokenizer, CausalLM | None]:  # fmt: skip
    """The learner at its start (the model from --init or the run being resumed), the policy as the loss sees it
    (`llm_rl.distributed.data_parallel`), its tokenizer, and GRPO's frozen reference model when its KL term is on."""
    lora = cfg.lora_rank > 0  # a LoRA run resumes from its initial model plus the saved adapters
    model, tokenizer = load_policy(spec, None if lora else resume, str(ranks.device))
    set_gradient_checkpointing(model, cfg.gradient_checkpointing)
    if lora:
        model = with_lora(model, LoRAConfig(cfg.lora_rank, cfg.lora_alpha, target_modules=cfg.lora_target_modules))
    reference = None
    if spec.algo == "grpo" and cfg.kl_coef > 0:
        reference = load_policy(spec, None, str(ranks.device))[0].eval().requires_grad_(False)
    policy = data_parallel(model, ranks, cfg.parallelism)  # before the optimiser: FSDP2 replaces the parameters
    optimizer = torch.optim.Adam(trainable_parameters(model), lr=cfg.learning_rate, betas=cfg.adam_betas)
    sampler = make_sampler(cfg.sampler, [p.level for p in pool], cfg.success_decay, cfg.priority_floor, cfg.advance_at)
    generator = torch.Generator().manual_seed(spec.seed)
    return Learner(model, optimizer, sampler, UnfinishedGroups(), rng, generator), policy, tokenizer, reference


def learn_from(exp: Experience, indices: np.ndarray, learner: Learner, policy: torch.nn.Module, cfg: RLConfig,
               spec: RLSpec, ranks: Ranks) -> dict[str, float]:  # fmt: skip
    """Updates the problems' success rates, takes the iteration's gradient steps; returns the totals to log."""
    success = all_gather_rows(exp.correct.float().mean(1), ranks)  # (P,) every rank's problems, in sampled order
    learner.sampler.update(indices, success.numpy())
    if cfg.reset_optimizer:
        learner.optimizer.state.clear()
    weight = token_share(exp.completion_mask, ranks) if LOSS_MEAN_OVER[spec.algo] == "tokens" else 1.0
    stats = update(policy, learner.model, learner.optimizer, exp, OBJECTIVES[spec.algo], cfg, weight)
    return iteration_totals(exp, stats, cfg, ranks)


def check_parallel_setup(cfg: RLConfig, ranks: Ranks) -> None:
    """UserErrors for what a torchrun launch cannot do, before anything is loaded or written."""
    if ranks.world_size > 1 and cfg.partial_rollouts:
        raise UserError("partial rollouts run in one process only; set partial_rollouts=false or run without torchrun.")
    shard(range(cfg.problems_per_iteration), ranks)  # an uneven split is refused
    if ranks.world_size > 1 and cfg.parallelism == "fsdp" and cfg.lora_rank:
        raise UserError("LoRA is not sharded with fsdp; set parallelism=ddp (the adapters are small) or lora_rank=0.")


def train(cfg: RLConfig, spec: RLSpec, resume: Path | None = None) -> RLResult:
    """RL fine-tuning of spec.init with spec.algo; `resume` continues a run directory. Under torchrun each of the
    processes samples and trains on its share of every iteration's problems (`llm_rl.distributed`)."""
    if spec.algo not in OBJECTIVES:
        raise UserError(f"unknown algorithm {spec.algo!r}; pick one of {', '.join(ALGOS)}.")
    torch.set_num_threads(cfg.num_threads)
    ranks = init_ranks(cfg.device)
    check_parallel_setup(cfg, ranks)
    task = get_task(spec.task)
    pool = problem_pool(task, spec, cfg)
    eval_levels = tuple(lv for lv in task.held_out_levels if not cfg.levels or lv in cfg.levels)
    eval_set = held_out_problems(task, cfg.eval_problems * len(eval_levels), spec.seed + 1, eval_levels)
    learner, policy, tokenizer, reference = new_learner(cfg, spec, resume, ranks, pool, seed_everything(spec.seed))
    model, codec = learner.model, text_codec(learner.model, tokenizer)
    check_context(model, longest_prompt(codec, pool + eval_set), cfg.max_new_tokens)
    made = new_run_dir(spec.runs_dir, spec.task, spec.algo, spec.seed) if resume is None and ranks.is_main else None
    run_dir = broadcast_path(Path(resume) if resume is not None else made, ranks)
    iteration = 0 if resume is None else restore_state(run_dir, learner, policy)
    if resume is not None:  # before the logger rewrites config.json
        check_budget_left(run_dir, iteration, cfg.iterations, "iterations", "--set iterations=N")
    logger = SilentLogger()
    if ranks.is_main:
        logger = RunLogger(run_dir, run_config(cfg, spec), cfg.iterations, iteration, print_every=2**62,
                           quiet=spec.quiet)  # fmt: skip
    logger.line(f"{spec.algo} on {spec.task}: {len(pool)} training problems, sampler {cfg.sampler} -> {run_dir}")
    result = RLResult(run_dir, model, iteration, unfinished=learner.unfinished, is_main=ranks.is_main)
    if eval_set and resume is None:
        with gathered(policy):  # a sharded policy is gathered on every rank; rank 0 evaluates
            if ranks.is_main:
                result.evals.append((0, evaluate_and_log(model, tokenizer, task, eval_set, cfg, logger, 0)))
    with stop_signals() as stop:
        while iteration < cfg.iterations and not any_rank(stop.is_set(), ranks):
            started = time.perf_counter()
            length_weight = cfg.length_penalty_weight if iteration >= cfg.length_penalty_warmup else 0.0
            with gathered(policy):
                exp, indices = gather(learner, reference, pool, codec, task.check, cfg, length_weight, iteration, ranks)
            model.train()
            totals = None
            if exp is not None:  # None: partial rollouts where no group finished this iteration
                totals = learn_from(exp, indices, learner, policy, cfg, spec, ranks)
                result.mean_rewards.append(totals["correct"] / totals["responses"])
                log_iteration(logger, totals, exp.texts, length_weight, time.perf_counter() - started, iteration + 1,
                              cfg)  # fmt: skip
            iteration += 1
            logger.scalar("completions/unfinished_groups", len(learner.unfinished.groups), iteration)
            logger.progress(iteration)
            due = bool(eval_set) and (
                (cfg.eval_every and iteration % cfg.eval_every == 0) or iteration == cfg.iterations
            )
            if due:
                with gathered(policy):
                    if ranks.is_main:
                        accuracy = evaluate_and_log(model, tokenizer, task, eval_set, cfg, logger, iteration)
                        result.evals.append((iteration, accuracy))
            evaluated = due and ranks.is_main
            if iteration % cfg.log_every == 0 or iteration == cfg.iterations:
                logger.line(progress_line(iteration, result, totals, cfg.log_every, evaluated))
            checkpoint_due = cfg.checkpoint_every and iteration % cfg.checkpoint_every == 0
            if checkpoint_due and iteration < cfg.iterations:
                save_state(run_dir, learner, tokenizer, spec, iteration, policy, ranks)
        save_state(run_dir, learner, tokenizer, spec, iteration, policy, ranks)
    logger.close()
    close(ranks)
    result.iterations, result.stopped = iteration, iteration < cfg.iterations
    return result
