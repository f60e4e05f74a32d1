"""How far one step along the RL gradient of a language model goes: the reach of a policy-gradient update.

    python benchmarks/llm_gradient_steps.py CHECKPOINT --task addition --levels 4 5 --batches 16

For a checkpoint (an `rl llm sft` warm-up, say) and one of `rl llm train`'s objectives:
1. Draws `--batches` batches of P train-split problems with G responses each at temperature 1, as one iteration of
   `rl llm train` does, and takes the objective's gradient at theta = theta_i on each.
2. Noise: the mean cosine between the gradients of two different batches. Were each batch gradient the true gradient
   g plus independent noise, the cosine would be |g|^2 / (|g|^2 + noise / (P G)): near 0 means one iteration's
   direction is mostly noise.
3. Reach: steps theta_i + alpha * d / |d| along d = -(the mean gradient over all batches), for each alpha in
   `--steps`, and reports the sampled accuracy on fresh train-split problems (the same problems and random draws for
   every alpha). An update helps as long as it stays within the alpha where accuracy still rises.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llm_rl.causal_lm import load_causal_lm_and_tokenizer  # noqa: E402
from llm_rl.evaluate import TextCodec, text_codec  # noqa: E402
from llm_rl.experience import Experience, collect  # noqa: E402
from llm_rl.objectives import OBJECTIVES  # noqa: E402
from llm_rl.rl_config import RLConfig  # noqa: E402
from llm_rl.sampling import SamplingConfig, row_generators, sequence_log_probs  # noqa: E402
from llm_rl.tasks import Problem, Task, get_task  # noqa: E402
from rl.errors import run_script  # noqa: E402


def draw(task: Task, levels: list[int], count: int, rng: np.random.Generator) -> list[Problem]:
    """`count` train-split problems, the levels in turn."""
    return [task.sample(rng, levels[i % len(levels)]) for i in range(count)]


def responses(model: torch.nn.Module, problems: list[Problem], codec: TextCodec, task: Task, cfg: RLConfig,
              generator: torch.Generator) -> Experience:  # fmt: skip
    """G scored responses to each problem at temperature cfg.temperature, as one `rl llm train` iteration samples."""
    sampling = SamplingConfig(cfg.max_new_tokens, cfg.temperature, stop_token_ids=codec.stop_ids)
    rows = len(problems) * cfg.samples_per_problem
    return collect(model, None, problems, codec, task.check, cfg.samples_per_problem, sampling, 0.0,
                   row_generators(generator, rows))  # fmt: skip


def batch_gradient(model: torch.nn.Module, problems: list[Problem], codec: TextCodec, task: Task, cfg: RLConfig,
                   algo: str, generator: torch.Generator) -> Tensor:  # fmt: skip
    """The objective's gradient (flattened) on G fresh responses to each problem, at the current parameters."""
    exp = responses(model, problems, codec, task, cfg, generator)
    model.zero_grad(set_to_none=True)
    log_probs = sequence_log_probs(model, exp.input_ids, exp.attention_mask, exp.completion_mask)
    OBJECTIVES[algo](log_probs, exp, cfg).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def sampled_accuracy(model: torch.nn.Module, problems: list[Problem], codec: TextCodec, task: Task,
                     cfg: RLConfig) -> float:  # fmt: skip
    """Share of correct responses, G per problem, with the same seeded draws at every call."""
    exp = responses(model, problems, codec, task, cfg, torch.Generator().manual_seed(1))
    return exp.correct.float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="Hugging Face model directory (RUN/model)")
    parser.add_argument("--task", default="addition")
    parser.add_argument("--levels", type=int, nargs="+", default=[4, 5], help="task levels of the problems")
    parser.add_argument("--algo", default="kimi", choices=list(OBJECTIVES))
    parser.add_argument("--batches", type=int, default=16, help="batches of P problems whose gradients are averaged")
    parser.add_argument("--problems", type=int, default=16, help="P, problems per batch (rl llm train's default)")
    parser.add_argument("--fresh", type=int, default=192, help="fresh problems that measure each step")
    parser.add_argument("--steps", type=float, nargs="+", default=[0.0, 0.005, 0.01, 0.02, 0.04, 0.08])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, tokenizer = load_causal_lm_and_tokenizer(args.checkpoint, dtype=torch.float32, device="cpu")
    model.eval()
    codec, task, cfg = text_codec(model, tokenizer), get_task(args.task), RLConfig()
    rng, generator = np.random.default_rng(args.seed), torch.Generator().manual_seed(args.seed)
    fresh = draw(task, args.levels, args.fresh, rng)
    gradients = torch.stack(
        [
            batch_gradient(model, draw(task, args.levels, args.problems, rng), codec, task, cfg, args.algo, generator)
            for _ in range(args.batches)
        ]
    )  # (batches, parameters)
    unit = gradients / gradients.norm(dim=1, keepdim=True)
    cosines = (unit @ unit.T)[~torch.eye(args.batches, dtype=torch.bool)]
    print(
        f"{args.algo} on {args.task} levels {args.levels}: {sum(p.numel() for p in model.parameters()):,} "
        f"parameters, {args.batches} batches of {args.problems} x {cfg.samples_per_problem} responses"
    )
    print(f"mean cosine between two batches' gradients: {cosines.mean():.3f}")
    direction = -gradients.mean(0)
    direction = direction / direction.norm()
    start = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    for alpha in args.steps:
        torch.nn.utils.vector_to_parameters(start + alpha * direction, model.parameters())
        print(
            f"step {alpha:<6g} sampled accuracy on {args.fresh} fresh problems: "
            f"{sampled_accuracy(model, fresh, codec, task, cfg):.3f}"
        )


if __name__ == "__main__":
    run_script(main)
