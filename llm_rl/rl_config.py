"""What `rl llm train` is told: the hyperparameters (`RLConfig`, `--set` and `--config`) and the run (`RLSpec`).

"Deviation N" refers to the numbered deviations in `llm_rl.rl_trainer`'s docstring.
"""

from __future__ import annotations

from dataclasses import dataclass

from llm_rl.distributed import PARALLELISMS
from llm_rl.objectives import LOG_PARTITION
from llm_rl.partial_rollouts import PartialRolloutConfig
from llm_rl.precision import check_precision
from llm_rl.sampling_strategies import SAMPLERS

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
