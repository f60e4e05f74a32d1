"""What an RL fine-tuning run (`llm_rl.rl_trainer`) keeps, saves and reports: the learner's state, the policy it
loads, the checkpoint it resumes from, and the tags and progress lines it logs.

The checkpoint is a Hugging Face model directory plus `checkpoint.safetensors` with the optimiser, the problem
sampler's success rates, the partial rollouts still waiting, and the random generators (arrays), their structure
and the iteration in JSON: nothing is pickled. In a data-parallel run the logged figures are totals over every
rank's responses (`llm_rl.distributed.all_sum`), and only rank 0 logs and saves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tokenizers import Tokenizer

from llm_rl.causal_lm import CausalLM, load_causal_lm_and_tokenizer
from llm_rl.distributed import Ranks, all_sum, any_rank, full_states, is_sharded, load_full_optimizer_state
from llm_rl.evaluate import evaluate
from llm_rl.experience import Experience
from llm_rl.lora import restore_adapters, save_training_model
from llm_rl.partial_rollouts import UnfinishedGroups
from llm_rl.precision import autocast
from llm_rl.run_control import diverged, weights_are_finite
from llm_rl.sampling_strategies import ProblemSampler
from llm_rl.sft import MODEL_DIR
from llm_rl.tasks import Problem, Task
from rl.checkpoint import flatten_state, load_checkpoint, save_checkpoint, unflatten_state
from rl.errors import UserError
from rl.run_logger import RunLogger, SilentLogger
from rl.seeding import generator_state, restore_generator

if TYPE_CHECKING:
    from llm_rl.rl_config import RLConfig, RLSpec
    from llm_rl.rl_trainer import RLResult


@dataclass
class Learner:
    """What a run changes as it goes; all of it is in the checkpoint."""

    model: CausalLM
    optimizer: torch.optim.Optimizer
    sampler: ProblemSampler
    unfinished: UnfinishedGroups
    """Partial rollouts: the groups still being generated (empty without partial rollouts)."""
    rng: np.random.Generator
    """Draws the problems."""
    generator: torch.Generator
    """Draws the responses' tokens (or seeds each partial rollout's own generator)."""


@dataclass
class UpdateStats:
    """What the gradient steps of one iteration measured."""

    loss: float
    """Objective at the first gradient step."""
    log_ratio: float
    """Mean over responses of log pi_theta(y|x) - log pi_theta_i(y|x) (summed over tokens) after the last step."""


def load_policy(spec: RLSpec, resume: Path | None, device: str) -> tuple[CausalLM, Tokenizer]:
    """The model to train (any local Hugging Face causal LM): the run's last checkpoint when resuming, else --init."""
    path = Path(resume) / MODEL_DIR if resume is not None else Path(spec.init)
    if not (path / "config.json").is_file():
        raise UserError(f"{path} is not a model directory; pass --init RUN_DIR/model written by `rl llm sft`.")
    model, tokenizer = load_causal_lm_and_tokenizer(path, dtype=torch.float32, device=device)
    if not model.cfg.eos_token_ids:
        raise UserError(f"{path} names no eos_token_id in config.json; add one so responses can end.")
    for module in model.modules():  # GPT-2's dropout, say: the trained log-probs must be the sampled ones (deviation 2)
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model, tokenizer


def save_state(run_dir: Path, learner: Learner, tokenizer: Tokenizer, spec: RLSpec, iteration: int,
               policy: torch.nn.Module, ranks: Ranks) -> None:  # fmt: skip
    """Weights as a Hugging Face directory (LoRA's merged in); optimiser, sampler, unfinished partial rollouts,
    iteration, generators and LoRA's adapters in checkpoint.safetensors. Every rank calls it and rank 0 writes; a
    sharded policy's weights and optimiser state are gathered whole first (into a copy loaded from --init). Diverged
    instead if a weight is no longer finite (`llm_rl.run_control`)."""
    if any_rank(not weights_are_finite(learner.model), ranks):  # a huge learning rate times a finite step overflows
        raise diverged(f"iteration {iteration}", "a weight is not finite", learner.optimizer.param_groups[0]["lr"])
    model, optimizer_state = learner.model, None
    if is_sharded(policy):
        model_state, optimizer_state = full_states(policy, learner.optimizer)
        if ranks.is_main:
            model = load_policy(spec, None, "cpu")[0]
            model.load_state_dict(model_state)
    if not ranks.is_main:
        return
    if optimizer_state is None:
        optimizer_state = learner.optimizer.state_dict()
    arrays = {"torch_rng": torch.get_rng_state().numpy(), "sampling_rng": learner.generator.get_state().numpy()}
    save_training_model(model, tokenizer, run_dir / MODEL_DIR, spec.init, arrays)
    meta = {
        "iteration": iteration,
        "rng": generator_state(learner.rng),
        "optimizer": flatten_state(optimizer_state, "opt", arrays),
        "optimizer_by_name": is_sharded(policy),  # torch.distributed.checkpoint's form: parameters by their names
        "sampler": flatten_state(learner.sampler.state_dict(), "sampler", arrays),
        "unfinished": flatten_state(learner.unfinished.state_dict(), "unfinished", arrays),
    }
    save_checkpoint(run_dir, arrays, meta)


def restore_state(run_dir: Path, learner: Learner, policy: torch.nn.Module) -> int:
    """Loads what `save_state` wrote into the learner (and a sharded policy's optimiser shards); returns the iteration
    it was taken after."""
    arrays, meta = load_checkpoint(run_dir)
    try:
        restore_adapters(learner.model, arrays)
        optimizer_state = unflatten_state(meta["optimizer"], arrays)
        if meta.get("optimizer_by_name", False):  # saved sharded; loads into a sharded or a whole optimiser alike
            load_full_optimizer_state(policy, learner.optimizer, optimizer_state)
        elif is_sharded(policy):
            raise ValueError("it was saved without fsdp: resume it with parallelism=ddp")
        else:
            learner.optimizer.load_state_dict(optimizer_state)
        learner.sampler.load_state_dict(unflatten_state(meta["sampler"], arrays))
        learner.unfinished.load_state_dict(unflatten_state(meta["unfinished"], arrays))
    except (KeyError, ValueError, RuntimeError, TypeError) as error:
        raise UserError(f"the checkpoint in {run_dir} does not fit this run ({error}); start a new run.") from None
    restore_generator(learner.rng, meta["rng"])
    torch.set_rng_state(torch.from_numpy(arrays["torch_rng"]))
    learner.generator.set_state(torch.from_numpy(arrays["sampling_rng"]))
    return int(meta["iteration"])


def iteration_totals(exp: Experience, stats: UpdateStats, cfg: RLConfig, ranks: Ranks) -> dict[str, float]:
    """The sums behind one iteration's logged means, over every rank's responses (the loss and log-ratio, equal on
    every rank up to its share, are averaged)."""
    lengths, tokens = exp.lengths.float(), exp.completion_mask.sum()  # (B,), ()
    local = {
        "responses": float(len(lengths)),
        "reward": exp.rewards.sum().item(),
        "correct": exp.correct.sum().item(),
        "length_reward": exp.length_rewards.sum().item(),
        "length": lengths.sum().item(),
        "clipped": (lengths >= cfg.max_new_tokens).sum().item(),
        "repeated": float(sum(reason == "repetition" for reason in exp.finish_reasons)),
        "entropy": -exp.old_log_probs.sum().item(),  # summed -log pi over the counted tokens (0 elsewhere)
        "tokens": tokens.item(),
        "generated": float(exp.generated_tokens),
        "loss": stats.loss / ranks.world_size,
        "log_ratio": stats.log_ratio / ranks.world_size,
    }
    summed = all_sum(torch.tensor(list(local.values()), dtype=torch.float64), ranks)
    return dict(zip(local, summed.tolist(), strict=True))


def log_iteration(logger: RunLogger | SilentLogger, totals: dict[str, float], texts: list[str], length_weight: float,
                  seconds: float, iteration: int, cfg: RLConfig) -> None:  # fmt: skip
    """The fixed tags of one iteration, and some sampled responses as text every `log_every` iterations."""
    n = totals["responses"]
    logger.scalar("reward/mean", totals["reward"] / n, iteration)
    logger.scalar("reward/accuracy", totals["correct"] / n, iteration)
    logger.scalar("reward/length_penalty", length_weight * totals["length_reward"] / n, iteration)
    logger.scalar("completions/mean_length", totals["length"] / n, iteration)
    logger.scalar("completions/clipped_ratio", totals["clipped"] / n, iteration)
    logger.scalar("completions/repetition_ratio", totals["repeated"] / n, iteration)
    logger.scalar("losses/policy_loss", totals["loss"], iteration)
    logger.scalar("charts/log_ratio", totals["log_ratio"], iteration)
    logger.scalar("charts/entropy", totals["entropy"] / max(totals["tokens"], 1.0), iteration)
    logger.scalar("perf/tokens_per_s", totals["generated"] / max(seconds, 1e-9), iteration)
    if cfg.sample_texts and iteration % cfg.log_every == 0:
        shown = "\n\n".join(f"    {text}".replace("\n", "\n    ") for text in texts[: cfg.sample_texts])
        logger.text("completions", shown, iteration)


def progress_line(iteration: int, result: RLResult, totals: dict[str, float] | None, window: int,
                  evaluated: bool) -> str:  # fmt: skip
    """`iteration 20 | accuracy 0.613 | loss 0.0625 | log ratio -0.112 | eval accuracy 0.562`."""
    recent = result.mean_rewards[-window:]
    line = f"iteration {iteration} | accuracy {sum(recent) / max(len(recent), 1):.3f}"
    if totals is not None:
        line += f" | loss {totals['loss']:.4f} | log ratio {totals['log_ratio']:.3f}"
    return line + (f" | eval accuracy {result.evals[-1][1]:.3f}" if evaluated else "")


def evaluate_and_log(model: CausalLM, tokenizer: Tokenizer, task: Task, problems: list[Problem], cfg: RLConfig,
                     logger: RunLogger | SilentLogger, iteration: int) -> float:  # fmt: skip
    """Greedy accuracy on the fixed held-out problems, logged overall and per level."""
    with autocast(cfg.precision, cfg.device):
        result = evaluate(model, tokenizer, problems, max_new_tokens=cfg.max_new_tokens, check=task.check)
    logger.scalar("eval/accuracy", result.accuracy, iteration)
    for level, accuracy in result.per_level.items():
        logger.scalar(f"eval/accuracy_level_{level}", accuracy, iteration)
    return result.accuracy
