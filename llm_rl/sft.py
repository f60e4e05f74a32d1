"""Supervised warm-up: next-token cross-entropy on worked solutions, before reinforcement learning.

As in the SFT stage of InstructGPT (Ouyang et al. 2022, section 3.5) and the "cold start" of DeepSeek-R1 (2025) and
Kimi k1.5 (2025, section 2.2): each training sequence is `<bos> prompt solution <eos>`, and the loss is the mean
negative log-likelihood of the solution tokens (and the <eos>) given everything before them:

    loss = - sum_{b, t} m_{b,t} log pi(x_{b,t+1} | x_{b,<=t}) / sum_{b, t} m_{b,t},   m = 1 where x_{b,t+1} is a
                                                                                     solution token or the <eos>

minimised with AdamW (Loshchilov & Hutter 2019), the learning rate warmed up linearly over `warmup_steps` and then
decayed along a half cosine to `final_lr_fraction` of its peak (Loshchilov & Hutter 2017, without restarts).

Deviations and choices:
1. Batches are drawn afresh every step from the task's train split (a seeded numpy Generator), the level uniform
   over `levels`: an endless stream of problems instead of epochs over a fixed set.
2. The loss is averaged over all solution tokens in the batch (token mean), so long solutions weigh more.
3. Logits are computed only at the positions that predict a solution token, which saves the (B, L, V) tensor when
   the vocabulary is large.
4. Weight decay skips the vectors (norm weights and biases), as in GPT-2 / nanoGPT; gradients are clipped in norm.
5. The default warm-up is short on purpose: the built-in tiny model learns the short problems and only some of the
   long ones, which leaves reinforcement learning room to improve (addition, seed 0: greedy accuracy 1.00, 0.98,
   0.94, 0.58, 0.36 and 0.08 on levels 1-6, 0.66 overall; the steps end where the learning curve is steep, so seeds
   differ: seeds 1 to 3 reach 0.80, 0.89 and 0.67).
   `answer_only_fraction` shows that share of the examples as only their final line, `Answer: ...`, as a mixed
   corpus would; the model then sometimes answers at once, which is right on one-digit sums and almost never beyond,
   and RL can gain by learning to work problems out. Off by default, as it is unreliable here (addition, 0.3,
   greedy accuracy of warm-up -> default `rl llm train`: seed 0 0.620 -> 0.790, seed 1 0.620 -> 0.630, seed 2 0.317
   -> 0.363): where the warm-up already works everything out when decoding greedily nothing is left to gain, and
   the bare answers can also hold back the learning of the worked solutions (seed 2: 0.317 against 0.89 without).
6. `precision = "bf16"` computes the loss's forward pass and the evaluations under bfloat16 autocast over float32
   weights (`llm_rl.precision`); `gradient_checkpointing` recomputes each block in the backward pass. `--model`
   takes any local Hugging Face causal LM (`llm_rl.causal_lm`).
7. A loss, gradient or weight that is no longer finite stops the run before the step or save, saving nothing over
   the last checkpoint (`llm_rl.run_control`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import Tensor

from llm_rl.causal_lm import CausalLM, load_causal_lm_and_tokenizer, require_directory, set_gradient_checkpointing
from llm_rl.evaluate import EvalResult, TextCodec, check_prompts_fit, evaluate, held_out_problems, text_codec
from llm_rl.lora import LoRAConfig, restore_adapters, save_training_model, trainable_parameters, with_lora
from llm_rl.model import Transformer, num_parameters, preset
from llm_rl.precision import autocast
from llm_rl.run_control import diverged, is_finite_step, keep_last_checkpoint, stop_signals, weights_are_finite
from llm_rl.sft_config import SFTConfig, SFTSpec
from llm_rl.tasks import Problem, Task, get_task
from llm_rl.tokenizer import BOS_ID, EOS_ID, build_tokenizer
from rl.checkpoint import check_budget_left, flatten_state, load_checkpoint, save_checkpoint, unflatten_state
from rl.config import config_dict
from rl.errors import UserError
from rl.run_logger import RunLogger, new_run_dir
from rl.seeding import generator_state, restore_generator, seed_everything

MODEL_DIR = "model"
"""The Hugging Face checkpoint inside a run directory."""
CONTEXT_SAMPLES = 256
"""Train problems per level measured to find the longest training example (`check_example_length`)."""


@dataclass(frozen=True)
class SFTBatch:
    """Right-padded training sequences and which next-token predictions the loss counts."""

    input_ids: Tensor  # (B, L) long: <bos> prompt solution, padded with the pad id
    targets: Tensor  # (B, L) long: the next token at every position
    loss_mask: Tensor  # (B, L) bool: True where the target is a solution token or the <eos>


@dataclass
class SFTResult:
    """What `train` did: where the run went, its curves, and whether it was stopped early."""

    run_dir: Path
    model: CausalLM
    """The trained model, as saved in `checkpoint`."""
    checkpoint: Path
    """The Hugging Face directory of the final weights (`run_dir/model`)."""
    steps: int
    """Optimiser steps done in total (resumed runs included)."""
    losses: list[float]
    """The training loss at each step of this session."""
    evals: list[tuple[int, EvalResult]]
    """(step, result) of each evaluation of this session."""
    stopped: bool
    """True when a stop signal ended the run before `steps`."""


def sft_batch(prompts: list[list[int]], solutions: list[list[int]], pad_id: int) -> SFTBatch:
    """Sequences prompt + solution (token ids; the prompt starts with <bos>, the solution ends with <eos>)."""
    sequences = [prompt + solution for prompt, solution in zip(prompts, solutions, strict=True)]
    length = max(len(sequence) for sequence in sequences) - 1
    input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    targets = torch.full_like(input_ids, pad_id)
    loss_mask = torch.zeros_like(input_ids, dtype=torch.bool)
    for row, (prompt, sequence) in enumerate(zip(prompts, sequences, strict=True)):
        if not prompt or len(sequence) == len(prompt):
            raise ValueError("every sequence needs a prompt token and a solution token")
        input_ids[row, : len(sequence) - 1] = torch.tensor(sequence[:-1])
        targets[row, : len(sequence) - 1] = torch.tensor(sequence[1:])
        loss_mask[row, len(prompt) - 1 : len(sequence) - 1] = True  # position t predicts token t + 1
    return SFTBatch(input_ids, targets, loss_mask)


def sft_loss(model: CausalLM, batch: SFTBatch) -> Tensor:
    """Mean negative log-likelihood of the masked targets (the token mean of the module docstring)."""
    hidden = model.hidden_states(batch.input_ids)  # (B, L, E); right padding needs no attention mask
    logits = model.lm_head(hidden[batch.loss_mask]).float()  # (M, V): only the M positions that count
    return F.cross_entropy(logits, batch.targets[batch.loss_mask])


def learning_rate(step: int, cfg: SFTConfig) -> float:
    """Linear warm-up to cfg.learning_rate over warmup_steps, then a half cosine down to final_lr_fraction of it."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    progress = min((step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1), 1.0)
    floor = cfg.learning_rate * cfg.final_lr_fraction
    return floor + (cfg.learning_rate - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def sample_batch(task: Task, levels: tuple[int, ...], batch_size: int, answer_only_fraction: float,
                 rng: np.random.Generator, codec: TextCodec, device: torch.device) -> SFTBatch:  # fmt: skip
    """batch_size training problems, each at a level drawn uniformly from `levels`, and each shown with probability
    `answer_only_fraction` as its bare answer line instead of its worked solution."""
    problems = [task.sample(rng, int(level), "train") for level in rng.choice(levels, size=batch_size)]
    if answer_only_fraction > 0:  # no draws at 0, so a worked-solutions-only run sees the batches it always did
        answer_only = rng.random(batch_size) < answer_only_fraction
        problems = [answer_line_only(p) if bare else p for p, bare in zip(problems, answer_only, strict=True)]
    return to_device(sft_batch_from_problems(problems, codec), device)


def answer_line_only(problem: Problem) -> Problem:
    """The problem with the last line of its solution (`Answer: ...` for the built-in tasks) as the whole solution."""
    return replace(problem, solution=problem.solution.rstrip("\n").rsplit("\n", 1)[-1])


def sft_batch_from_problems(problems: list[Problem], codec: TextCodec) -> SFTBatch:
    """The SFT batch of `<bos> prompt solution <eos>` for each problem."""
    solutions = [codec.encode(problem.solution) + [codec.eos_id] for problem in problems]
    return sft_batch([codec.prompt_ids(problem) for problem in problems], solutions, codec.pad_id)


def to_device(batch: SFTBatch, device: torch.device) -> SFTBatch:
    return SFTBatch(batch.input_ids.to(device), batch.targets.to(device), batch.loss_mask.to(device))


def training_levels(task: Task, wanted: tuple[int, ...]) -> tuple[int, ...]:
    """The wanted levels (all of the task's when empty); a UserError for a level the task lacks."""
    for level in wanted:
        if level not in task.levels:
            raise UserError(f"{task.name} has no level {level}; set levels to some of {list(task.levels)}.")
    return wanted or task.levels


def check_example_length(model: CausalLM, codec: TextCodec, task: Task, levels: tuple[int, ...], seed: int) -> None:
    """A UserError unless the longest of CONTEXT_SAMPLES train examples per level fits the model's context: past
    max_position_embeddings GPT-2's position table has no row (an IndexError deep in the first batch). They are drawn
    with a generator of their own, so the training batches are the same with or without the check."""
    rng = np.random.default_rng(seed)
    problems = [task.sample(rng, level, "train") for level in levels for _ in range(CONTEXT_SAMPLES)]
    longest = max(problems, key=lambda p: len(codec.prompt_ids(p)) + len(codec.encode(p.solution)))
    positions = len(codec.prompt_ids(longest)) + len(codec.encode(longest.solution))  # the input is all but <eos>
    limit = model.cfg.max_position_embeddings
    if positions > limit:
        raise UserError(
            f"{task.name} level {longest.level} examples take up to {positions + 1} tokens with <bos> and <eos>, "
            f"beyond the model's context of {limit} (max_position_embeddings); set levels to lower ones or use a "
            "longer-context model."
        )


def build_model(spec: SFTSpec, device: str) -> tuple[CausalLM, Tokenizer]:
    """The built-in model with the character tokenizer (seeded init), or the causal LM directory at spec.model."""
    if spec.model is not None:
        require_directory(Path(spec.model), "model directory", "pass a Hugging Face model directory")
        model, tokenizer = load_causal_lm_and_tokenizer(spec.model, dtype=torch.float32, device=device)
        if not model.cfg.eos_token_ids:
            raise UserError(f"{spec.model} names no eos_token_id in config.json; add one so solutions can end.")
        return model, tokenizer
    tokenizer = build_tokenizer()
    cfg = preset(spec.model_config, vocab_size=tokenizer.get_vocab_size(), bos_token_id=BOS_ID, eos_token_ids=(EOS_ID,))
    return Transformer(cfg).to(device), tokenizer


def training_model(cfg: SFTConfig, spec: SFTSpec, resume: Path | None) -> tuple[CausalLM, Tokenizer]:
    """The model to train, ready for its optimiser: built or loaded (the resumed run's weights; a LoRA run starts
    again from --model and gets its adapters back from the checkpoint), with gradient checkpointing and adapters."""
    lora = cfg.lora_rank > 0
    if lora and spec.model is None:
        raise UserError("LoRA adapts a loaded model: pass --model PATH (or set lora_rank=0 to train from scratch).")
    if resume is None or lora:
        model, tokenizer = build_model(spec, cfg.device)
    else:
        model, tokenizer = load_causal_lm_and_tokenizer(
            Path(resume) / MODEL_DIR, dtype=torch.float32, device=cfg.device
        )
    set_gradient_checkpointing(model, cfg.gradient_checkpointing)
    if lora:
        model = with_lora(model, LoRAConfig(cfg.lora_rank, cfg.lora_alpha))
    return model, tokenizer


def adamw(model: CausalLM, cfg: SFTConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices only."""
    params = trainable_parameters(model)
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=cfg.adam_betas)


def optimizer_step(model: CausalLM, optimizer: torch.optim.Optimizer, batch: SFTBatch, cfg: SFTConfig, lr: float,
                   step: int) -> float:  # fmt: skip
    """One AdamW step at learning rate `lr` on the batch's loss, which it returns; Diverged instead of a step on a
    non-finite loss or gradient (`llm_rl.run_control`)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    with autocast(cfg.precision, cfg.device):
        loss = sft_loss(model, batch)  # float32: the logits are cast before the cross-entropy
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
    if not is_finite_step(loss.item(), grad_norm):
        measured = f"loss {loss.item():g}, gradient norm {float(grad_norm):g}"
        raise diverged(f"step {step + 1}", measured, cfg.learning_rate)
    optimizer.step()
    return loss.item()


def save_state(run_dir: Path, model: CausalLM, tokenizer: Tokenizer, source: str | None,
               optimizer: torch.optim.Optimizer, step: int, rng: np.random.Generator,
               learning_rate: float) -> Path:  # fmt: skip
    """The weights as a Hugging Face directory (LoRA's merged in), then the optimiser, step, generators and LoRA's
    adapters in checkpoint.safetensors; Diverged instead if a weight is no longer finite."""
    if not weights_are_finite(model):  # a step of a finite gradient times a huge learning rate overflows
        raise diverged(f"step {step}", "a weight is not finite", learning_rate)
    arrays = {"torch_rng": torch.get_rng_state().numpy()}
    checkpoint = save_training_model(model, tokenizer, run_dir / MODEL_DIR, source, arrays)
    meta = {
        "step": step,
        "rng": generator_state(rng),
        "optimizer": flatten_state(optimizer.state_dict(), "opt", arrays),
    }
    save_checkpoint(run_dir, arrays, meta)
    return checkpoint


def restore_state(run_dir: Path, model: CausalLM, optimizer: torch.optim.Optimizer, rng: np.random.Generator) -> int:
    """Loads what `save_state` wrote into LoRA's adapters, the optimiser and the generators; returns the step."""
    arrays, meta = load_checkpoint(run_dir)
    try:
        restore_adapters(model, arrays)
        optimizer.load_state_dict(unflatten_state(meta["optimizer"], arrays))
    except (KeyError, ValueError, RuntimeError) as error:
        raise UserError(
            f"the optimiser state in {run_dir} does not fit the model ({error}); start a new run."
        ) from None
    restore_generator(rng, meta["rng"])
    torch.set_rng_state(torch.from_numpy(arrays["torch_rng"]))
    return int(meta["step"])


def run_config(cfg: SFTConfig, spec: SFTSpec) -> dict:
    """What config.json records: enough to resume the run."""
    return {"spec": config_dict(spec), "sft_config": config_dict(cfg)}


def train(cfg: SFTConfig, spec: SFTSpec, resume: Path | None = None) -> SFTResult:
    """Fine-tunes (or trains from scratch) on the task's worked solutions; `resume` continues a run directory."""
    torch.set_num_threads(cfg.num_threads)
    task = get_task(spec.task)
    levels, eval_levels = training_levels(task, cfg.levels), cfg.eval_levels or task.held_out_levels
    eval_set = held_out_problems(task, cfg.eval_problems * len(eval_levels), spec.seed + 1, eval_levels)
    rng = seed_everything(spec.seed)
    model, tokenizer = training_model(cfg, spec, resume)
    codec = text_codec(model, tokenizer)
    if eval_set:  # max_new_tokens bounds only the evaluations' completions
        check_prompts_fit(model, codec, eval_set, cfg.max_new_tokens)
    check_example_length(model, codec, task, levels, spec.seed + 3)
    run_dir = Path(resume) if resume is not None else new_run_dir(spec.runs_dir, spec.task, "sft", spec.seed)
    optimizer = adamw(model, cfg)
    step = 0 if resume is None else restore_state(run_dir, model, optimizer, rng)
    if resume is not None:  # before the logger rewrites config.json
        check_budget_left(run_dir, step, cfg.steps, "steps", "--steps")
    logger = RunLogger(run_dir, run_config(cfg, spec), cfg.steps, step, print_every=2**62, quiet=spec.quiet)
    logger.line(f"sft on {spec.task} levels {list(levels)}: {num_parameters(model):,} parameters -> {run_dir}")
    result = SFTResult(run_dir, model, run_dir / MODEL_DIR, step, [], [], stopped=False)
    started, last_line = time.perf_counter(), step
    model.train()
    with keep_last_checkpoint(run_dir, logger), stop_signals() as stop:
        while step < cfg.steps and not stop.is_set():
            lr = learning_rate(step, cfg)
            batch = sample_batch(task, levels, cfg.batch_size, cfg.answer_only_fraction, rng, codec, model.device)
            result.losses.append(optimizer_step(model, optimizer, batch, cfg, lr, step))
            step += 1
            logger.scalar("losses/sft_loss", result.losses[-1], step)
            logger.scalar("charts/learning_rate", lr, step)
            logger.progress(step)
            if eval_set and ((cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps):
                result.evals.append((step, evaluate_and_log(model, tokenizer, task, eval_set, cfg, logger, step)))
            if step % cfg.log_every == 0 or step == cfg.steps:
                rate = (step - last_line) / (time.perf_counter() - started)
                logger.line(progress_line(step, result, cfg.log_every, lr, rate))
                started, last_line = time.perf_counter(), step
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
                save_state(run_dir, model, tokenizer, spec.model, optimizer, step, rng, cfg.learning_rate)
        save_state(run_dir, model, tokenizer, spec.model, optimizer, step, rng, cfg.learning_rate)
    logger.close()
    result.steps, result.stopped = step, step < cfg.steps
    return result


def evaluate_and_log(model: CausalLM, tokenizer: Tokenizer, task: Task, problems: list[Problem],
                     cfg: SFTConfig, logger: RunLogger, step: int) -> EvalResult:  # fmt: skip
    """Greedy accuracy on the fixed held-out problems, logged overall and per level."""
    with autocast(cfg.precision, cfg.device):
        result = evaluate(model, tokenizer, problems, max_new_tokens=cfg.max_new_tokens, check=task.check)
    logger.scalar("eval/accuracy", result.accuracy, step)
    for level, accuracy in result.per_level.items():
        logger.scalar(f"eval/accuracy_level_{level}", accuracy, step)
    return result


def progress_line(step: int, result: SFTResult, window: int, lr: float, rate: float) -> str:
    """`step 400 | loss 0.213 | lr 2.9e-03 | 9.1 steps/s | eval accuracy 0.62 (L1 1.00 L2 0.88 ...)`."""
    recent = result.losses[-window:]
    line = f"step {step} | loss {sum(recent) / len(recent):.3f} | lr {lr:.1e} | {rate:.1f} steps/s"
    if result.evals and result.evals[-1][0] == step:
        evaluation = result.evals[-1][1]
        levels = " ".join(f"L{level} {accuracy:.2f}" for level, accuracy in evaluation.per_level.items())
        line += f" | eval accuracy {evaluation.accuracy:.2f} ({levels})"
    return line
