"""The `rl llm` commands: supervised warm-up (`sft`), RL fine-tuning (`train`) and evaluation of a checkpoint (`eval`).

    rl llm sft --task addition [--model PATH | --model-config tiny|small] [--steps N] [--runs-dir DIR] [--seed S]
               [--set KEY=VALUE ...] [--config FILE.toml] [--resume RUN_DIR] [--quiet]
    rl llm train --algo kimi|grpo|rloo --init CHECKPOINT|--model PATH --task NAME [--data FILE] [--runs-dir DIR]
                 [--seed S] [--config FILE.toml] [--set KEY=VALUE ...] [--resume RUN_DIR] [--quiet]
    rl llm eval CHECKPOINT|--model PATH --task addition [--data FILE] [--n N] [--samples K] [--seed S] [--levels L ...]
    rl llm merge A B [--weight 0.5] --out DIR              (long2short: weight averaging of two checkpoints)
    rl llm shortest --init CKPT --task NAME [--n 8] [--problems 100] --out FILE.jsonl   (shortest rejection sampling)

`rl/cli.py` builds these subcommands only when the command line starts with `llm`, since llm_rl imports torch.
`--model PATH` accepts any local Hugging Face causal LM directory (`llm_rl.causal_lm`); for `train` it is another name
for --init, for `eval` for the CHECKPOINT argument. Mistakes raise UserError (the `rl` entry point prints one `error:`
line and exits with 2); `sft` and `train` stopped by SIGINT or SIGTERM save their checkpoint and exit with 130. `eval`
prints one line per level, then its JSON summary last. `--resume RUN_DIR` continues a run as its config.json records
it, so flags that name another run beside it (--task, --seed, --algo, ...) are refused rather than ignored; `sft
--steps N` and `train --set iterations=N` extend the budget, and train's --set takes only RESUME_SETTABLE's fields.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm_rl.long2short import add_long2short_parsers
from rl.config import (
    at_least,
    build_config,
    check_device,
    field_docs,
    load_toml,
    parse_assignments,
    seed_type,
    threads_type,
)
from rl.errors import UserError

if TYPE_CHECKING:
    from llm_rl.evaluate import Check
    from llm_rl.tasks import Problem, Task

EXIT_INTERRUPTED = 130
DEFAULT_EVAL_PROBLEMS = 300
"""Problems `rl llm eval` draws from a task when --n is not given (50 per level for addition's six)."""
RESUME_SETTABLE = ("iterations", "checkpoint_every", "eval_every", "log_every", "sample_texts", "num_threads", "device")
"""RL config fields `--set` may change beside `rl llm train --resume`: the budget, and how the run is carried out and
reported. The others would not fit the checkpoint (the pool, LoRA, the partial rollouts) or be overwritten by it (the
learning rate, in the optimiser state)."""
DATA_CHECK_HELP = "; completions are checked against each row's answer by value (countdown's by its own verifier)"


def add_llm_parser(llm: argparse.ArgumentParser) -> None:
    """Adds the `sft` and `eval` subcommands to the `rl llm` parser."""
    from llm_rl.model import PRESETS

    sub = llm.add_subparsers(required=True, metavar="COMMAND")
    sft = sub.add_parser(
        "sft",
        help="supervised warm-up on a task's worked solutions",
        epilog=sft_config_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sft.add_argument("--task", help="task to train on: addition, multiplication or countdown")
    source = sft.add_mutually_exclusive_group()
    source.add_argument("--model", metavar="PATH", help="Hugging Face model directory to fine-tune")
    source.add_argument(
        "--model-config", choices=list(PRESETS), help="built-in model trained from scratch (default tiny)"
    )
    sft.add_argument("--steps", type=at_least(1), help="optimiser steps (the config's `steps`)")
    sft.add_argument("--runs-dir", help="parent directory of the run directory (default runs)")
    sft.add_argument("--seed", type=seed_type(), help="seeds the model, the batches and the evaluation (default 0)")
    sft.add_argument("--config", help="TOML file of SFT config fields")
    sft.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE", help="override SFT config fields")
    sft.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    sft.add_argument("--quiet", action="store_true", help="no progress bar or progress lines")
    sft.set_defaults(command=cmd_sft)

    add_train_parser(sub)
    add_long2short_parsers(sub)

    evaluate = sub.add_parser("eval", help="accuracy and pass@k of a checkpoint on held-out problems")
    evaluate.add_argument(
        "checkpoint", nargs="?", help="a model directory (RUN_DIR/model, or the run directory itself)"
    )
    evaluate.add_argument("--model", metavar="PATH", help="Hugging Face causal LM directory (instead of CHECKPOINT)")
    evaluate.add_argument("--task", help="task whose held-out problems and verifier to use")
    evaluate.add_argument(
        "--data", help="JSONL or Parquet file of problems instead of the task's generator" + DATA_CHECK_HELP
    )
    evaluate.add_argument(
        "--n", type=at_least(1), help=f"problems: from the task, over its levels (default {DEFAULT_EVAL_PROBLEMS}); "
        "from --data, the first N rows (default all)"
    )  # fmt: skip
    evaluate.add_argument("--levels", type=int, nargs="+", help="task levels (default: the task's held-out levels)")
    evaluate.add_argument(
        "--samples", type=at_least(1), default=1, help="completions per problem, k of pass@k (accuracy scores the 1st)"
    )
    evaluate.add_argument(
        "--temperature", type=at_least(0, float), help="sampling temperature (default 0 = greedy if k = 1, else 1)"
    )
    evaluate.add_argument("--max-new-tokens", type=at_least(1), default=256)
    evaluate.add_argument("--batch-size", type=at_least(1), default=64, help="completions generated together")
    evaluate.add_argument("--seed", type=seed_type(), default=0, help="seeds the drawn problems and the sampling")
    evaluate.add_argument(
        "--threads", type=threads_type(), default=1, help="torch CPU threads (more for a large model)"
    )
    evaluate.add_argument("--device", default="cpu")
    evaluate.set_defaults(command=cmd_eval)


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    """The `rl llm train` subcommand."""
    from llm_rl.rl_config import ALGOS, RLConfig

    train = sub.add_parser(
        "train",
        help="RL fine-tuning on a task's verifier: Kimi k1.5 mirror descent, GRPO or RLOO",
        epilog=config_help(RLConfig),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("--algo", choices=ALGOS, help="objective (default kimi)")
    train.add_argument("--init", metavar="CHECKPOINT", help="model directory to start from (an sft run or its model)")
    train.add_argument("--model", metavar="PATH", help="Hugging Face causal LM directory to start from (as --init)")
    train.add_argument("--task", help="task whose verifier and held-out problems to use")
    train.add_argument(
        "--data", help="JSONL or Parquet file of training problems instead of the task's generator" + DATA_CHECK_HELP
    )
    train.add_argument("--runs-dir", help="parent directory of the run directory (default runs)")
    train.add_argument("--seed", type=seed_type(), help="seeds the pool, the sampling and the evaluation (default 0)")
    train.add_argument("--config", help="TOML file of RL config fields")
    train.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE", help="override RL config fields")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    train.add_argument("--quiet", action="store_true", help="no progress lines")
    train.set_defaults(command=cmd_train)


def config_help(cls: type) -> str:
    """For --help: a config dataclass's fields, their defaults and docs."""
    docs = field_docs(cls)
    lines = ["config fields (--set KEY=VALUE or --config FILE.toml):"]
    lines += [f"  {f.name} = {f.default!r}    {docs.get(f.name, '')}" for f in fields(cls)]
    return "\n".join(lines)


def cmd_train(args: argparse.Namespace) -> int:
    from llm_rl.rl_config import RLConfig, RLSpec
    from llm_rl.rl_trainer import train
    from llm_rl.tasks import get_task

    overrides = parse_assignments(args.set, "--set")
    if args.resume:
        from rl.run_logger import read_run_config

        refuse_resume_changes({"--algo": args.algo, "--init": args.init, "--model": args.model, "--task": args.task,
                               "--data": args.data, "--seed": args.seed, "--runs-dir": args.runs_dir,
                               "--config": args.config})  # fmt: skip
        fixed = [key for key in overrides if key not in RESUME_SETTABLE]
        if fixed:
            raise UserError(
                f"--resume continues a run with the config it was started with, so --set {', '.join(fixed)} cannot "
                f"change it; --set there takes only {', '.join(RESUME_SETTABLE)}, or start a new run."
            )
        saved = read_run_config(Path(args.resume), "rl_config", "rl llm train")
        spec = saved_spec(RLSpec, saved, Path(args.resume), "rl llm train", args.quiet)
        overrides = {**saved["rl_config"], **overrides}
    else:
        overrides = {**(load_toml(args.config) if args.config else {}), **overrides}
        model = one_model_path(args.init, args.model, "--init")
        if not args.task or not model:
            beside_data = " (with --data too: the task's held-out problems give eval/accuracy)" if args.data else ""
            raise UserError(
                f"rl llm train needs --init CHECKPOINT (or --model PATH) and --task NAME{beside_data} (or --resume "
                "RUN_DIR)."
            )
        get_task(args.task)
        init = str(checkpoint_dir(Path(model)))
        spec = RLSpec(args.algo or "kimi", init, args.task, args.data, args.seed or 0, args.runs_dir or "runs",
                      args.quiet)  # fmt: skip
    cfg = build_config(RLConfig, overrides, "rl llm train")
    result = train(cfg, spec, Path(args.resume) if args.resume else None)
    if not result.is_main:  # torchrun's other processes: rank 0 reports
        return EXIT_INTERRUPTED if result.stopped else 0
    if result.stopped:
        print(f"stopped at iteration {result.iterations}; checkpoint saved.", file=sys.stderr)
        print(f"resume with: rl llm train --resume {result.run_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"checkpoint: {result.run_dir / 'model'}")
    return 0


def sft_config_help() -> str:
    """For `rl llm sft --help`: the SFT config fields, their defaults and docs."""
    from llm_rl.sft_config import SFTConfig

    return config_help(SFTConfig)


def cmd_sft(args: argparse.Namespace) -> int:
    from llm_rl.sft import train
    from llm_rl.sft_config import SFTConfig, SFTSpec
    from llm_rl.tasks import get_task

    overrides = load_toml(args.config) if args.config else {}
    overrides |= parse_assignments(args.set, "--set")
    if args.steps is not None:
        overrides["steps"] = args.steps
    if args.resume:
        from rl.run_logger import read_run_config

        refuse_resume_changes({"--task": args.task, "--model": args.model, "--model-config": args.model_config,
                               "--seed": args.seed, "--runs-dir": args.runs_dir})  # fmt: skip
        saved = read_run_config(Path(args.resume), "sft_config", "rl llm sft")
        spec = saved_spec(SFTSpec, saved, Path(args.resume), "rl llm sft", args.quiet)
        overrides = {**saved["sft_config"], **overrides}
    else:
        if not args.task:
            raise UserError("rl llm sft needs --task NAME (or --resume RUN_DIR); see `rl llm sft --help`.")
        get_task(args.task)
        spec = SFTSpec(args.task, args.seed or 0, args.model, args.model_config or "tiny", args.runs_dir or "runs",
                       args.quiet)  # fmt: skip
    cfg = build_config(SFTConfig, overrides, "sft")
    result = train(cfg, spec, Path(args.resume) if args.resume else None)
    if result.stopped:
        print(f"stopped at step {result.steps}; checkpoint saved.", file=sys.stderr)
        print(f"resume with: rl llm sft --resume {result.run_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"checkpoint: {result.checkpoint}")
    return 0


def refuse_resume_changes(given: dict[str, Any]) -> None:
    """A UserError naming the flags given beside --resume: the run's recorded spec would silently win over them."""
    changes = [name for name, value in given.items() if value is not None]
    if changes:
        raise UserError(
            f"--resume continues a run with the config it was started with, so {', '.join(changes)} cannot change "
            f"it; drop {'it' if len(changes) == 1 else 'them'}, or start a new run."
        )


def saved_spec(cls: type, saved: dict, run_dir: Path, command: str, quiet: bool) -> Any:
    """The spec dataclass a run's config.json records, with this session's --quiet; a UserError if its keys are not
    the spec's (an edited file, or one written by another version)."""
    try:
        return cls(**{**saved["spec"], "quiet": quiet})
    except TypeError as error:
        raise UserError(
            f"{run_dir / 'config.json'} has a spec `{command}` cannot read ({error}); fix the file or start a new run."
        ) from None


def one_model_path(given: str | None, model: str | None, name: str) -> str | None:
    """The model directory given as `name` (--init, CHECKPOINT) or --model; a UserError if both name different ones."""
    same = (
        given is None or model is None or checkpoint_dir(Path(given)).resolve() == checkpoint_dir(Path(model)).resolve()
    )
    if not same:
        raise UserError(f"{name} {given} and --model {model} name different models; pass only one of them.")
    return given if given is not None else model


def checkpoint_dir(path: Path) -> Path:
    """The model directory: `path` itself, or `path/model` when `path` is an SFT run directory."""
    from llm_rl.causal_lm import require_directory
    from llm_rl.sft import MODEL_DIR

    fix = "pass the directory `rl llm sft` printed (RUN_DIR/model) or a Hugging Face model directory"
    require_directory(path, "checkpoint directory", fix)
    return path / MODEL_DIR if (path / MODEL_DIR / "config.json").is_file() else path


def eval_problems(args: argparse.Namespace, task: Task | None) -> tuple[list[Problem], Check]:
    """The problems `rl llm eval` scores and their verifier: --data's rows checked by value as training checks them
    (`llm_rl.data.row_check`), or the task's held-out problems checked by its own verifier."""
    from llm_rl.data import load_problems, row_check
    from llm_rl.evaluate import held_out_problems

    if args.data:
        return load_problems(args.data, limit=args.n, task=task), row_check(task)
    return held_out_problems(task, args.n or DEFAULT_EVAL_PROBLEMS, args.seed, args.levels or ()), task.check


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from llm_rl.causal_lm import load_causal_lm_and_tokenizer
    from llm_rl.evaluate import evaluate
    from llm_rl.tasks import get_task

    given = one_model_path(args.checkpoint, args.model, "CHECKPOINT")
    if given is None:
        raise UserError("rl llm eval needs a CHECKPOINT directory or --model PATH to evaluate.")
    path = checkpoint_dir(Path(given))
    if args.task is None and args.data is None:
        raise UserError("rl llm eval needs --task NAME or --data FILE to know what to evaluate on.")
    check_device(args.device, "--device")
    task = get_task(args.task) if args.task else None
    problems, check = eval_problems(args, task)
    torch.set_num_threads(args.threads)
    model, tokenizer = load_causal_lm_and_tokenizer(path, dtype=torch.float32, device=args.device)
    temperature = args.temperature if args.temperature is not None else (0.0 if args.samples == 1 else 1.0)
    result = evaluate(
        model, tokenizer, problems, samples=args.samples, batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens, temperature=temperature, seed=args.seed, check=check,
    )  # fmt: skip
    counts = Counter(problem.level for problem in problems)
    for level, accuracy in result.per_level.items():
        print(f"level {level}: accuracy {accuracy:.3f} ({counts[level]} problems)")
    summary = {"accuracy": result.accuracy, "pass_at_k": result.pass_at_k, "mean_length": result.mean_length}
    print(json.dumps({**summary, "n": result.n}))
    return 0
