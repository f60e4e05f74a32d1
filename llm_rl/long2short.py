"""Long2short, Kimi k1.5 (Kimi Team 2025), section 2.4: make a long-chain-of-thought model answer in fewer tokens.

Three of the paper's four methods (DPO on shortest/longest pairs is not here):
1. Model merging: average the weights of a long-CoT and a short-CoT model of the same architecture,
       theta = weight * theta_a + (1 - weight) * theta_b              (every tensor, weight in [0, 1])
2. Shortest rejection sampling: sample n responses per problem and keep the shortest correct one as SFT data
   (`rl llm shortest` writes it as JSONL rows {"question", "answer", "solution", "level"}, which
   `llm_rl.data.load_problems` reads back as Problems whose `solution` is the kept response).
3. Long2short RL: the length penalty of section 2.3.3 (`llm_rl.rewards.kimi_length_reward`) with a much shorter
   maximum length, so that responses beyond it are penalised even when correct:
       len'(i) = min(len(i), max_length),   correct'(i) = correct(i) and len(i) <= max_length,
       reward_i = kimi_length_reward(len', correct')_i

Choices:
1. Length is counted in tokens, the stop token included (as `llm_rl.evaluate`); ties go to the first sample drawn.
2. Problems with no correct sample are dropped from the SFT data (the paper does not say what it does with them).
3. In the paper the shorter cap is the rollout's max length, so over-long responses are cut and fail to answer;
   `long2short_length_reward` reaches the same effect from full lengths by counting them as wrong and at the cap.
4. Merging computes in float32 and stores in the dtype of the first checkpoint; its tokenizer and companion files
   are copied.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from llm_rl.causal_lm import architecture, require_directory
from llm_rl.evaluate import Check, check_prompts_fit, text_codec
from llm_rl.hf_io import load_pretrained, save_pretrained
from llm_rl.model import Transformer
from llm_rl.rewards import is_correct, kimi_length_reward
from llm_rl.sampling import SamplingConfig, generate, left_pad
from llm_rl.tasks import Problem
from rl.config import at_least, check_device, seed_type, threads_type
from rl.errors import UserError


@dataclass(frozen=True)
class Response:
    """One sampled response to a problem."""

    text: str
    """The decoded completion, the stop token left out."""
    length: int
    """Generated tokens, the stop token included."""


def merged_state(state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor], weight: float
                 ) -> dict[str, torch.Tensor]:  # fmt: skip
    """weight * a + (1 - weight) * b for every tensor, in float32 cast back to a's dtype; UserError on a mismatch."""
    if set(state_a) != set(state_b):
        different = sorted(set(state_a) ^ set(state_b))[:3]
        raise UserError(f"the two models have different tensors ({different}); merge checkpoints of one architecture.")
    merged = {}
    for name, a in state_a.items():
        b = state_b[name]
        if a.shape != b.shape:
            raise UserError(
                f"{name} has shape {tuple(a.shape)} in one model and {tuple(b.shape)} in the other; "
                "merge checkpoints of one architecture."
            )
        merged[name] = (weight * a.float() + (1 - weight) * b.float().to(a.device)).to(a.dtype)
    return merged


def merge_models(path_a: str | Path, path_b: str | Path, weight: float, out_path: str | Path) -> Path:
    """Saves weight * A + (1 - weight) * B (Hugging Face directories of one architecture) to out_path."""
    if not 0 <= weight <= 1:
        raise UserError(f"--weight {weight} is outside [0, 1]; pass the share of the first model, e.g. 0.5.")
    for path in (path_a, path_b):
        if not (Path(path) / "config.json").is_file():
            raise UserError(f"{path} has no config.json; pass Hugging Face model directories (RUN_DIR/model).")
        architecture(Path(path))  # a training run's config.json is not a model's: say so, not "architecture None"
    check_merge_out(Path(out_path), path_a, path_b)
    make_parent(Path(out_path), "--out")
    model_a, tokenizer_a = load_pretrained(path_a)
    model_b, tokenizer_b = load_pretrained(path_b)
    different = [f.name for f in fields(model_a.cfg) if getattr(model_a.cfg, f.name) != getattr(model_b.cfg, f.name)]
    if different:
        raise UserError(
            f"{path_a} and {path_b} differ in config ({', '.join(different)}); merge checkpoints of one architecture."
        )
    if tokenizer_a.get_vocab() != tokenizer_b.get_vocab():
        raise UserError(f"{path_a} and {path_b} have different tokenizers; merge models that share one.")
    state = merged_state(model_a.state_dict(), model_b.state_dict(), weight)
    model_a.load_state_dict(state)
    model_a.tie_weights()
    try:
        return save_pretrained(model_a, tokenizer_a, out_path, source=path_a)
    except OSError as error:  # a full disk, a directory made read-only since the check
        raise UserError(f"cannot write the merged model to {out_path} ({error.strerror or error}); free space or "
                        "pass another --out.") from None  # fmt: skip


def check_merge_out(out: Path, path_a: str | Path, path_b: str | Path) -> None:
    """A UserError unless `out` is new or an empty directory: writing the merged model into a model or run
    directory would replace its weights or its config.json (and a run could no longer be resumed)."""
    if out.resolve() in (Path(path_a).resolve(), Path(path_b).resolve()):
        raise UserError(f"--out {out} is one of the models being merged; pass a new directory so neither is lost.")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pass a new directory for the merged model.")
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"--out {out} already exists and is not empty; pass a new directory so nothing is overwritten.")


def sample_responses(model: Transformer, tokenizer: Tokenizer, problems: Sequence[Problem], n: int,
                     sampling: SamplingConfig, generator: torch.Generator, batch_size: int = 64
                     ) -> list[list[Response]]:  # fmt: skip
    """n sampled responses for each problem (in order), batch_size rows at a time."""
    codec = text_codec(model, tokenizer)
    check_prompts_fit(model, codec, problems, sampling.max_new_tokens)
    rows = [problem for problem in problems for _ in range(n)]  # each problem's samples side by side
    responses: list[Response] = []
    was_training = model.training
    model.eval()
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        prompt_ids, prompt_mask = left_pad([codec.prompt_ids(p) for p in chunk], codec.pad_id, model.device)
        out = generate(model, prompt_ids, prompt_mask, sampling, generator, codec.pad_id)
        for ids, mask in zip(out.token_ids.tolist(), out.mask.tolist(), strict=True):
            kept = [token for token, real in zip(ids, mask, strict=True) if real]
            responses.append(Response(codec.decode(kept), len(kept)))
    model.train(was_training)
    return [responses[i * n : (i + 1) * n] for i in range(len(problems))]


def shortest_correct(problems: Sequence[Problem], responses: Sequence[Sequence[Response]], check: Check
                     ) -> list[Problem]:  # fmt: skip
    """Each problem whose responses include a correct one, with the shortest correct response as its solution."""
    kept = []
    for problem, candidates in zip(problems, responses, strict=True):
        correct = [response for response in candidates if check(problem, response.text)]
        if correct:
            kept.append(replace(problem, solution=min(correct, key=lambda response: response.length).text))
    return kept


def shortest_rejection_sampling(model: Transformer, tokenizer: Tokenizer, problems: Sequence[Problem], n: int,
                                sampling: SamplingConfig, seed: int = 0, check: Check | None = None,
                                batch_size: int = 64) -> list[Problem]:  # fmt: skip
    """Samples n responses per problem and keeps the shortest correct one (module docstring, method 2)."""
    if n < 1 or batch_size < 1:
        raise UserError(f"n ({n}) and batch size ({batch_size}) must be at least 1.")
    check = check or (lambda problem, text: is_correct(text, problem.answer))
    generator = torch.Generator().manual_seed(seed)
    responses = sample_responses(model, tokenizer, problems, n, sampling, generator, batch_size)
    return shortest_correct(problems, responses, check)


def write_problems(problems: Sequence[Problem], path: str | Path) -> Path:
    """JSONL rows {"question", "answer", "solution", "level"} that `llm_rl.data.load_problems` reads back."""
    path = check_jsonl_out(path)
    rows = [{"question": p.question, "answer": p.answer, "solution": p.solution, "level": p.level} for p in problems]
    try:
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    except OSError as error:
        raise UserError(f"cannot write {path} ({error.strerror or error}); free space or pass another --out.") from None
    return path


def make_parent(path: Path, flag: str) -> None:
    """Makes the directory `path` goes in, so that a file in its way or a missing permission is a UserError before
    any loading or sampling, not a traceback after it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        in_the_way = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        reason = f"{in_the_way} is a file, not a directory" if in_the_way else f"{error.strerror or error}"
        raise UserError(f"{flag} {path}: cannot make its directory ({reason}); pass a path in a directory.") from None


def check_jsonl_out(path: str | Path) -> Path:
    """`path` as a Path, if it can take the JSONL output: it ends in .jsonl and does not exist yet (an existing data
    file is never overwritten); its directory is made now."""
    path = Path(path)
    if path.suffix != ".jsonl":
        raise UserError(f"{path} does not end in .jsonl; name the output FILE.jsonl.")
    if path.is_dir():
        raise UserError(f"{path} is a directory; name an output FILE.jsonl.")
    if path.exists():
        raise UserError(f"{path} already exists; name a new output FILE.jsonl so it is not overwritten.")
    make_parent(path, "--out")
    return path


def long2short_length_reward(lengths: list[int], correct: list[bool], max_length: int) -> list[float]:
    """Kimi's length reward with a shorter cap: beyond max_length a response counts as wrong and at the cap."""
    if max_length < 1:
        raise ValueError(f"max_length={max_length} must be >= 1")
    capped = [min(length, max_length) for length in lengths]
    within = [ok and length <= max_length for length, ok in zip(lengths, correct, strict=True)]
    return kimi_length_reward(capped, within)


def add_long2short_parsers(llm_subparsers: argparse._SubParsersAction) -> None:
    """Adds `merge` and `shortest` to the `rl llm` subcommands."""
    merge = llm_subparsers.add_parser("merge", help="average the weights of two checkpoints (long2short merging)")
    merge.add_argument("a", help="first model directory (RUN_DIR/model or a Hugging Face directory)")
    merge.add_argument("b", help="second model directory, of the same architecture")
    merge.add_argument("--weight", type=float, default=0.5, help="share of the first model, in [0, 1]")
    merge.add_argument("--out", required=True, help="directory of the merged model")
    merge.set_defaults(command=cmd_merge)

    shortest = llm_subparsers.add_parser("shortest", help="shortest-rejection sampling: SFT data of short answers")
    shortest.add_argument("--init", required=True, metavar="CKPT", help="model directory to sample from")
    shortest.add_argument("--task", help="task whose train problems (and verifier) to use")
    shortest.add_argument("--data", help="JSONL or Parquet file of problems instead of the task's generator")
    shortest.add_argument("--problems", type=at_least(1), default=100, help="problems drawn from the task (or read)")
    shortest.add_argument("--levels", type=int, nargs="+", help="task levels (default: all), spread evenly")
    shortest.add_argument("--n", type=at_least(1), default=8, help="responses sampled per problem")
    shortest.add_argument("--out", required=True, metavar="FILE.jsonl", help="where the kept solutions go")
    shortest.add_argument("--temperature", type=at_least(0, float), default=1.0)
    shortest.add_argument("--max-new-tokens", type=at_least(1), default=256)
    shortest.add_argument("--batch-size", type=at_least(1), default=64, help="responses generated together")
    shortest.add_argument("--seed", type=seed_type(), default=0, help="seeds the drawn problems and the sampling")
    shortest.add_argument("--threads", type=threads_type(), default=1, help="torch CPU threads")
    shortest.add_argument("--device", default="cpu")
    shortest.set_defaults(command=cmd_shortest)


def model_dir(path: str) -> Path:
    """`path`, or `path/model` when it is a run directory."""
    from llm_rl.sft import MODEL_DIR

    require_directory(Path(path), "model directory", "pass RUN_DIR/model or a Hugging Face directory")
    return Path(path) / MODEL_DIR if (Path(path) / MODEL_DIR / "config.json").is_file() else Path(path)


def cmd_merge(args: argparse.Namespace) -> int:
    out = merge_models(model_dir(args.a), model_dir(args.b), args.weight, args.out)
    print(f"merged model: {out}")
    return 0


def task_problems(args: argparse.Namespace) -> tuple[list[Problem], Check | None]:
    """The problems to sample for (from --data or the task's train split) and the task's verifier, if any."""
    from llm_rl.data import load_problems, row_check
    from llm_rl.tasks import get_task

    if args.task is None and args.data is None:
        raise UserError("rl llm shortest needs --task NAME or --data FILE to know which problems to answer.")
    task = get_task(args.task) if args.task else None
    if args.data:
        return load_problems(args.data, limit=args.problems, task=task), row_check(task)
    levels = tuple(args.levels or task.levels)
    rng = np.random.default_rng(args.seed)
    return [task.sample(rng, levels[i % len(levels)], "train") for i in range(args.problems)], task.check


def cmd_shortest(args: argparse.Namespace) -> int:
    check_jsonl_out(args.out)  # before the sampling, not after it
    check_device(args.device, "--device")
    problems, check = task_problems(args)
    torch.set_num_threads(args.threads)
    model, tokenizer = load_pretrained(model_dir(args.init), dtype=torch.float32, device=args.device)
    if args.temperature <= 0 or args.max_new_tokens < 1:
        raise UserError("--temperature must be above 0 and --max-new-tokens at least 1 to draw different samples.")
    sampling = SamplingConfig(args.max_new_tokens, args.temperature, stop_token_ids=model.cfg.eos_token_ids)
    kept = shortest_rejection_sampling(model, tokenizer, problems, args.n, sampling, args.seed, check, args.batch_size)
    out = write_problems(kept, args.out)
    print(f"kept the shortest correct response for {len(kept)} of {len(problems)} problems -> {out}")
    return 0
