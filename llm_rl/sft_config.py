"""What `rl llm sft` is told: the warm-up's hyperparameters (`SFTConfig`) and the run (`SFTSpec`).

"Choice N" refers to the numbered choices in `llm_rl.sft`'s docstring.
"""

from __future__ import annotations

from dataclasses import dataclass

from llm_rl.precision import check_precision


@dataclass(frozen=True)
class SFTConfig:
    """Hyperparameters of the supervised warm-up; the defaults take a few minutes on two CPU cores."""

    steps: int = 1500
    """Optimiser steps in total."""
    batch_size: int = 32
    """Sequences per optimiser step."""
    learning_rate: float = 3e-3
    """Peak AdamW step size, reached after the warm-up."""
    final_lr_fraction: float = 0.1
    """The cosine decay ends at this fraction of the peak learning rate."""
    warmup_steps: int = 50
    """Steps over which the learning rate rises linearly from learning_rate / warmup_steps to its peak."""
    weight_decay: float = 0.01
    """AdamW's decoupled weight decay on the weight matrices."""
    adam_betas: tuple[float, float] = (0.9, 0.99)
    """AdamW's moment decay rates (beta1, beta2)."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global norm."""
    levels: tuple[int, ...] = ()
    """Task levels trained on, drawn uniformly; empty means all of the task's levels."""
    answer_only_fraction: float = 0.0
    """Share of examples shown as the bare final line `Answer: ...` instead of the worked solution (choice 5)."""
    eval_levels: tuple[int, ...] = ()
    """Held-out levels of the periodic evaluation; empty means the task's default held-out levels."""
    eval_problems: int = 16
    """Held-out problems per level in each periodic evaluation (the same problems every time); 0 skips evaluation."""
    eval_every: int = 500
    """Steps between evaluations (and one at the end); 0 evaluates only at the end."""
    max_new_tokens: int = 256
    """Longest completion generated in an evaluation."""
    log_every: int = 100
    """Steps between progress lines."""
    checkpoint_every: int = 500
    """Steps between checkpoints (and one at the end or on a stop signal); 0 saves only at the end."""
    num_threads: int = 1
    """torch CPU threads: one suits the tiny model (more threads on a busy machine make it several times slower)."""
    device: str = "cpu"
    """Where the model trains ("cpu", "cuda", "cuda:1")."""
    precision: str = "fp32"
    """fp32, or bf16: bfloat16 autocast of the forward passes over float32 weights (llm_rl.precision)."""
    gradient_checkpointing: bool = False
    """Recompute each transformer block in the backward pass instead of keeping its activations (saves memory)."""
    lora_rank: int = 0
    """Train LoRA adapters of this rank on the block linears of the --model instead of every weight; 0: every weight."""
    lora_alpha: float = 16.0
    """LoRA: the adapters' update B A is scaled by lora_alpha / lora_rank."""

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if self.lora_rank < 0 or self.lora_alpha <= 0:
            raise ValueError("lora_rank must be >= 0 (0 turns LoRA off) and lora_alpha > 0")
        if min(self.steps, self.batch_size, self.max_new_tokens, self.log_every, self.num_threads) < 1:
            raise ValueError("steps, batch_size, max_new_tokens, log_every and num_threads must be >= 1")
        if min(self.warmup_steps, self.eval_every, self.checkpoint_every, self.eval_problems, self.weight_decay) < 0:
            raise ValueError("warmup_steps, eval_every, checkpoint_every, eval_problems and weight_decay must be >= 0")
        if self.learning_rate <= 0 or not 0 <= self.final_lr_fraction <= 1:
            raise ValueError("learning_rate must be > 0 and final_lr_fraction in [0, 1]")
        if not 0 <= self.answer_only_fraction <= 1:
            raise ValueError("answer_only_fraction must be in [0, 1]")


@dataclass(frozen=True)
class SFTSpec:
    """What to fine-tune, on which task, and where the run goes (the command line's arguments)."""

    task: str
    """Registered task name (addition, multiplication, countdown)."""
    seed: int = 0
    """Seeds the model's initialisation, the training batches and the evaluation problems."""
    model: str | None = None
    """A Hugging Face model directory to fine-tune; None trains the built-in model from scratch."""
    model_config: str = "tiny"
    """Preset of the built-in model (`llm_rl.model.PRESETS`) when `model` is None."""
    runs_dir: str = "runs"
    """Parent of the run directory."""
    quiet: bool = False
    """No progress bar or lines."""
