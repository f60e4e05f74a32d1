"""Two seeded RL iterations of `llm_rl.rl_trainer.train` on level-1 addition, run alone or under torchrun by
test_distributed.py.
Usage: [torchrun --nproc-per-node N] distributed_train_worker.py ALGO PARALLELISM INIT RUNS_DIR OUT.safetensors
Rank 0 writes the parameters of the saved checkpoint and the per-iteration mean rewards."""

from __future__ import annotations

import os
import sys
from dataclasses import replace

import torch
from safetensors.torch import save_file

from llm_rl.hf_io import load_pretrained
from llm_rl.rl_config import RLConfig, RLSpec
from llm_rl.rl_trainer import train

CONFIG = RLConfig(iterations=2, levels=(1,), problems_per_iteration=4, samples_per_problem=4, max_new_tokens=24,
                  eval_problems=0, log_every=1, sample_texts=1, pool_size=8, sampler="prioritized",
                  learning_rate=1e-3, checkpoint_every=0)  # fmt: skip


def main(algo: str, parallelism: str, init: str, runs_dir: str, out: str) -> None:
    cfg = replace(CONFIG, parallelism=parallelism)
    result = train(cfg, RLSpec(algo, init, "addition", seed=5, runs_dir=runs_dir, quiet=True))
    if os.environ.get("RANK", "0") == "0":  # the checkpoint: with fsdp, the gathered whole model
        saved = load_pretrained(result.run_dir / "model")[0]
        params = {f"param.{n}": p.detach().contiguous() for n, p in saved.named_parameters()}
        save_file(params | {"mean_rewards": torch.tensor(result.mean_rewards)}, out)


if __name__ == "__main__":
    main(*sys.argv[1:6])
