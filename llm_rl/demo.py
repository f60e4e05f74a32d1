"""The language-model demo (`rl demo --llm`): a warm-up, then Kimi k1.5 RL, each judged on the same held-out problems.

1. `rl llm sft --task addition` with its defaults: the built-in tiny model learns worked solutions.
2. `rl llm eval`: greedy accuracy on the task's held-out problems, per level.
3. `rl llm train --algo kimi` with its defaults from that warm-up.
4. `rl llm eval` again on the same problems.

Both runs write TensorBoard events under the runs directory. About six minutes on two CPU cores.
"""

from __future__ import annotations

from pathlib import Path

import torch

from llm_rl.evaluate import EvalResult, evaluate, held_out_problems
from llm_rl.hf_io import load_pretrained
from llm_rl.rl_config import RLConfig, RLSpec
from llm_rl.rl_trainer import train as rl_train
from llm_rl.sft import train as sft_train
from llm_rl.sft_config import SFTConfig, SFTSpec
from llm_rl.tasks import Problem, get_task

TASK = "addition"
EVAL_PROBLEMS, EVAL_SEED = 300, 0
"""The problems `rl llm eval --task addition` takes by default."""


def held_out_accuracy(model_dir: Path, problems: list[Problem]) -> EvalResult:
    """Greedy decoding of each held-out problem, as `rl llm eval` does by default."""
    model, tokenizer = load_pretrained(model_dir, dtype=torch.float32)
    return evaluate(model, tokenizer, problems, max_new_tokens=256, check=get_task(TASK).check)


def run_llm_demo(runs_dir: Path, seed: int = 0) -> None:
    torch.set_num_threads(1)
    problems = held_out_problems(get_task(TASK), EVAL_PROBLEMS, EVAL_SEED)
    print(f"\nLanguage models: the built-in tiny transformer on {TASK}, {EVAL_PROBLEMS} held-out problems.")
    print("1/2 supervised warm-up (rl llm sft --task addition):")
    warm_up = sft_train(SFTConfig(eval_problems=0), SFTSpec(TASK, seed, runs_dir=str(runs_dir)))
    before = held_out_accuracy(warm_up.checkpoint, problems)
    print("2/2 Kimi k1.5 RL from the warm-up (rl llm train --algo kimi):")
    rl = rl_train(RLConfig(), RLSpec("kimi", str(warm_up.checkpoint), TASK, None, seed, str(runs_dir)))
    after = held_out_accuracy(rl.run_dir / "model", problems)
    print("\nheld-out greedy accuracy   " + "  ".join(f"L{level}" for level in before.per_level) + "   all   length")
    for name, result in (("after the warm-up", before), ("after Kimi RL", after)):
        levels = " ".join(f"{accuracy:.2f}" for accuracy in result.per_level.values())
        print(f"{name:<26} {levels}  {result.accuracy:.3f}  {result.mean_length:5.1f}")
    print(f"({after.accuracy - before.accuracy:+.3f}; length: mean tokens per response)")
    print(f"runs: {warm_up.run_dir} and {rl.run_dir}")
