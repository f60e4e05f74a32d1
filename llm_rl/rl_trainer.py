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

The same loop trains two baselines; only the objective differs (`llm_rl.objectives.OBJECTIVES`):
    grpo  (Shao et al. 2024, section 4.1): A = (r - group mean) / group std, PPO's clipped surrogate averaged per
          sequence, plus kl_coef * k3 KL to the frozen initial model.
    rloo  (Ahmadian et al. 2024): A = r - mean of the other k - 1 rewards, the importance-weighted REINFORCE
          surrogate pi / pi_old * A (equal to REINFORCE at the first step), token mean.

Deviations and choices:
1. The training problems are a fixed pool (drawn once from the task's train split, or read from --data), so that the
   samplers can track each problem's success rate. Rows of --data are checked against their answers by value, as
   `rl llm eval --data` checks them (`llm_rl.data.row_check`); the task's verifier checks its own problems.
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
10. A loss, gradient, log-probability or weight that is no longer finite stops the run before the step or save,
    saving nothing over the last checkpoint (`llm_rl.run_control`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from llm_rl.causal_lm import CausalLM, set_gradient_checkpointing
from llm_rl.data import load_problems, row_check
from llm_rl.distributed import (
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
from llm_rl.evaluate import TextCodec, check_prompts_fit, held_out_problems, text_codec
from llm_rl.experience import Check, Experience, collect, collect_partial, start_groups
from llm_rl.lora import LoRAConfig, trainable_parameters, with_lora
from llm_rl.objectives import LOSS_MEAN_OVER, OBJECTIVES, Objective
from llm_rl.partial_rollouts import UnfinishedGroups
from llm_rl.precision import autocast
from llm_rl.rl_config import ALGOS, RLConfig, RLSpec
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
from llm_rl.run_control import diverged, is_finite_step, keep_last_checkpoint, stop_signals
from llm_rl.sampling import SamplingConfig, row_generators
from llm_rl.sampling_strategies import make_sampler
from llm_rl.tasks import Problem, Task, get_task
from rl.checkpoint import check_budget_left
from rl.config import config_dict
from rl.errors import UserError
from rl.run_logger import RunLogger, SilentLogger, new_run_dir
from rl.seeding import seed_everything


def update(policy: torch.nn.Module, model: CausalLM, optimizer: torch.optim.Optimizer, exp: Experience,
           objective: Objective, cfg: RLConfig, ranks: Ranks, iteration: int, weight: float = 1.0
           ) -> UpdateStats:  # fmt: skip
    """`updates_per_iteration` full-batch gradient steps on `weight` times the objective; `policy` is the model's
    `llm_rl.distributed.data_parallel` wrapper (DDP averages the gradients over the ranks in the backward pass).
    Diverged instead of a step on a non-finite loss or gradient, every rank alike (`llm_rl.run_control`)."""
    losses = []
    for _ in range(cfg.updates_per_iteration):
        with autocast(cfg.precision, cfg.device):
            log_probs = policy(exp.input_ids, exp.attention_mask, exp.completion_mask)  # (B, L)
        loss = weight * objective(log_probs, exp, cfg)  # float32: the logits are cast before the softmax
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        if any_rank(not is_finite_step(loss.item(), grad_norm), ranks):
            measured = f"loss {loss.item():g}, gradient norm {float(grad_norm):g}"
            raise diverged(f"iteration {iteration}", measured, cfg.learning_rate)
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad(), autocast(cfg.precision, cfg.device):
        log_probs = policy(exp.input_ids, exp.attention_mask, exp.completion_mask)
        log_ratio = ((log_probs - exp.old_log_probs) * exp.completion_mask).sum(1).mean().item()
    if any_rank(not math.isfinite(log_ratio), ranks):  # the last step overflowed the weights
        raise diverged(f"iteration {iteration}", "log-probabilities after the update not finite", cfg.learning_rate)
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


def problem_pool(task: Task, spec: RLSpec, cfg: RLConfig) -> tuple[list[Problem], Check]:
    """The training problems and their verifier: the rows of --data, checked against their answers as `rl llm eval`
    checks them (`llm_rl.data.row_check`), or `pool_size` train-split problems spread over the levels, checked by the
    task's verifier."""
    if spec.data is not None:
        return load_problems(spec.data, task=task), row_check(task)
    levels = cfg.levels or task.levels
    for level in levels:
        if level not in task.levels:
            raise UserError(f"{task.name} has no level {level}; set levels to some of {list(task.levels)}.")
    rng = np.random.default_rng(spec.seed + 2)
    return [task.sample(rng, levels[i % len(levels)], "train") for i in range(cfg.pool_size)], task.check


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
               spec: RLSpec, ranks: Ranks, iteration: int) -> dict[str, float]:  # fmt: skip
    """Updates the problems' success rates, takes the iteration's gradient steps; returns the totals to log."""
    success = all_gather_rows(exp.correct.float().mean(1), ranks)  # (P,) every rank's problems, in sampled order
    learner.sampler.update(indices, success.numpy())
    if cfg.reset_optimizer:
        learner.optimizer.state.clear()
    weight = token_share(exp.completion_mask, ranks) if LOSS_MEAN_OVER[spec.algo] == "tokens" else 1.0
    stats = update(policy, learner.model, learner.optimizer, exp, OBJECTIVES[spec.algo], cfg, ranks, iteration, weight)
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
    pool, check = problem_pool(task, spec, cfg)
    eval_levels = tuple(lv for lv in task.held_out_levels if not cfg.levels or lv in cfg.levels)
    eval_set = held_out_problems(task, cfg.eval_problems * len(eval_levels), spec.seed + 1, eval_levels)
    learner, policy, tokenizer, reference = new_learner(cfg, spec, resume, ranks, pool, seed_everything(spec.seed))
    model, codec = learner.model, text_codec(learner.model, tokenizer)
    check_prompts_fit(model, codec, pool + eval_set, cfg.max_new_tokens)
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
                logger.line(f"held-out accuracy before training: {result.evals[-1][1]:.3f}")
    with keep_last_checkpoint(run_dir, logger, ranks.is_main), stop_signals() as stop:
        while iteration < cfg.iterations and not any_rank(stop.is_set(), ranks):
            started = time.perf_counter()
            length_weight = cfg.length_penalty_weight if iteration >= cfg.length_penalty_warmup else 0.0
            with gathered(policy):
                exp, indices = gather(learner, reference, pool, codec, check, cfg, length_weight, iteration, ranks)
            model.train()
            totals = None
            if exp is not None:  # None: partial rollouts where no group finished this iteration
                totals = learn_from(exp, indices, learner, policy, cfg, spec, ranks, iteration + 1)
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
