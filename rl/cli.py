"""The `rl` command: train, eval, plan, list, compare, the demo, and `rl llm` (language models).

The CLI sits at the top of the dependency graph: it is the one module in `rl/` that reaches into `agents/`, `envs/`
and `llm_rl/` (imported lazily, so `rl` stays importable on its own). Mistakes a user can make end in one `error:`
line and exit status 2, and the project's own warnings (a skipped malformed data row) in one `warning:` line each;
Ctrl-C or SIGTERM during training saves a checkpoint and exits with 130.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Any, NoReturn, TextIO

from rl.config import (
    at_least,
    build_config,
    config_dict,
    field_docs,
    load_toml,
    parse_assignments,
    seed_type,
    threads_type,
)
from rl.errors import EXIT_USER_ERROR, UserError

EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    warnings.showwarning = show_warning
    if os.getcwd() not in sys.path:  # `--env mymodule:MyEnv-v0` finds mymodule.py here, as `python -m` would
        sys.path.append(os.getcwd())
    try:
        args = build_parser(argv).parse_args(argv)
        return args.command(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (MemoryError, RuntimeError, ValueError) as error:
        if not out_of_memory(error):
            raise
        print("error: out of memory; use smaller sizes (the env's, or the config's buffer_size, hidden_sizes or "
              "batch sizes).", file=sys.stderr)  # fmt: skip
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (`rl plan ... | head`): stop quietly, as the Python docs advise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush would fail again
        return 1


def out_of_memory(error: BaseException) -> bool:
    """NumPy's MemoryError or "array is too big", or torch's allocators failing (a RuntimeError on the CPU,
    OutOfMemoryError on CUDA)."""
    text = str(error)
    return isinstance(error, MemoryError) or any(
        words in text.lower() for words in ("can't allocate memory", "out of memory", "array is too big")
    )


SHOW_WARNING = warnings.showwarning


def show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:  # fmt: skip
    """A UserWarning as one `warning:` line on stderr (no source line); other warnings as Python shows them."""
    if category is UserWarning:
        print(f"warning: {message}", file=sys.stderr if file is None else file)
    else:
        SHOW_WARNING(message, category, filename, lineno, file, line)


class Parser(argparse.ArgumentParser):
    """argparse, whose mistakes (an unknown flag, a missing value) end like every other: one `error:` line."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message}; see `{self.prog} --help`.")


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = Parser(prog="rl", description="Reinforcement learning from tables to language models.")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    add_train_parser(sub, argv)

    evaluate = sub.add_parser("eval", help="run a trained agent's greedy policy")
    evaluate.add_argument("run_dir", help="a run directory written by `rl train`")
    evaluate.add_argument("--episodes", type=at_least(1), default=10)
    evaluate.add_argument(
        "--seed",
        type=seed_type(),
        default=0,
        help="episode i starts from reset(seed=SEED + i); training's final evaluation used the run's seed + 10000",
    )
    evaluate.add_argument(
        "--video", metavar="DIR", help="also write each episode to DIR as an mp4 (needs moviepy: the video extra)"
    )
    evaluate.set_defaults(command=cmd_eval)

    plan = sub.add_parser("plan", help="optimal values and policy of an env that exposes its model")
    plan.add_argument("--env", required=True)
    plan.add_argument(
        "--algo",
        default="value_iteration",
        choices=["value_iteration", "policy_iteration", "truncated_policy_iteration"],
    )
    plan.add_argument("--gamma", type=float, default=0.9)
    plan.add_argument("--env-kwargs", nargs="+", action="extend", metavar="KEY=VALUE")
    plan.add_argument("--json", action="store_true", help='print {"values": [...], "policy": [...]}')
    plan.set_defaults(command=cmd_plan)

    listing = sub.add_parser("list", help="agents and the envs this package registers")
    listing.set_defaults(command=cmd_list)

    compare = sub.add_parser("compare", help="compare runs: a table over seeds and mean +- std curves")
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    compare.add_argument("--tag", default="charts/episodic_return")
    compare.add_argument("--out", help="PNG file for the curves")
    compare.set_defaults(command=cmd_compare)

    demo = sub.add_parser("demo", help="train tabular agents on the grid world and compare them with the optimum")
    demo.add_argument("--runs-dir", default="runs")
    demo.add_argument("--seed", type=seed_type(), default=0)
    demo.add_argument(
        "--llm", action="store_true", help="then warm up a tiny language model and train it with Kimi RL (~7 min)"
    )
    demo.set_defaults(command=cmd_demo)

    llm = sub.add_parser(
        "llm", help="language models: warm-up (sft), RL (train), evaluation (eval), long2short (merge, shortest)"
    )
    if argv[:1] == ["llm"]:  # llm_rl imports torch, so its subcommands are built only when asked for
        from llm_rl.cli import add_llm_parser

        add_llm_parser(llm)
    return parser


def add_train_parser(sub: argparse._SubParsersAction, argv: list[str]) -> None:
    """`rl train`: an agent on an env, with budgets, seeds, config overrides and resumption."""
    train = sub.add_parser(
        "train",
        help="train an agent on a Gymnasium env",
        epilog=agent_config_help(argv),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("agent", nargs="?", help="agent name (see `rl list`)")
    train.add_argument("--env", help="anything gymnasium.make accepts, module:Name-v0 included")
    budget = train.add_mutually_exclusive_group()
    budget.add_argument("--total-steps", type=at_least(1), help="environment steps to train for")
    budget.add_argument("--total-episodes", type=at_least(1), help="episodes to train for")
    train.add_argument("--seed", type=seed_type(), nargs="+", help="one run per seed, one after another (default 0)")
    train.add_argument("--runs-dir", default="runs", help="parent directory of the run directories")
    train.add_argument("--config", help="TOML file of agent config fields (and an [env_kwargs] table)")
    train.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE", help="override agent config fields")
    train.add_argument(
        "--env-kwargs", nargs="+", action="extend", metavar="KEY=VALUE", help="kwargs for gymnasium.make"
    )
    train.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    train.add_argument(
        "--checkpoint-every", type=at_least(1), help="environment steps between checkpoints (default 50000)"
    )
    train.add_argument("--eval-episodes", type=at_least(1), help="greedy episodes in each evaluation (default 10)")
    train.add_argument(
        "--eval-every",
        type=at_least(1),
        metavar="N",
        help="also evaluate the greedy policy (--eval-episodes episodes) every N environment steps while training",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar or progress lines")
    train.add_argument(
        "--threads",
        type=threads_type(),
        default=1,
        help="torch CPU threads (1 suits small networks; more oversubscribe a busy box)",
    )
    train.set_defaults(command=cmd_train)


def agent_config_help(argv: list[str]) -> str | None:
    """For `rl train AGENT --help`: the agent's config fields, their defaults and docs."""
    if len(argv) < 2 or argv[0] != "train":
        return "Run `rl train AGENT --help` to see an agent's config fields."
    from agents.registry import AGENTS

    entry = AGENTS.get(argv[1])
    if entry is None:
        return None
    docs = field_docs(entry.config)
    lines = [f"{entry.name}: {entry.description}", "config fields (--set KEY=VALUE):"]
    for f in fields(entry.config):
        lines.append(f"  {f.name} = {f.default!r}    {docs.get(f.name, '')}")
    return "\n".join(lines)


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    import envs  # noqa: F401  (registers GridWorld-v0)
    from agents.registry import get_agent
    from rl.run import Run

    torch.set_num_threads(args.threads)
    if args.resume:
        jobs = [resume_job(args)]
    else:
        if not args.agent or not args.env:
            raise UserError("rl train needs an agent and --env (or --resume RUN_DIR); see `rl train --help`.")
        jobs = [new_job(args, seed) for seed in args.seed or [0]]
    for spec, overrides, run_dir in jobs:
        entry = get_agent(spec.agent)
        cfg = build_config(entry.config, overrides, spec.agent)
        with Run(spec, config_dict(cfg), run_dir=run_dir) as run:
            run.announce(f"training {spec.agent} on {spec.env_id} (seed {spec.seed}) -> {run.run_dir}")
            entry.train(cfg, run)
        if run.stop_requested and run.budget_spent:  # the signal came during the final evaluation
            print(f"stopped in the final evaluation; training finished, checkpoint saved in {run.run_dir}.",
                  file=sys.stderr)  # fmt: skip
            return EXIT_INTERRUPTED
        if run.stop_requested:
            print(f"stopped at step {run.rollout.global_step}; checkpoint saved.", file=sys.stderr)
            print(f"resume with: rl train --resume {run.run_dir}", file=sys.stderr)
            return EXIT_INTERRUPTED
        print(f"run directory: {run.run_dir}")
    return 0


def new_job(args: argparse.Namespace, seed: int) -> tuple[Any, dict, None]:
    from rl.run import RunSpec

    file_config = load_toml(args.config) if args.config else {}
    file_env_kwargs = file_config.pop("env_kwargs", {})
    if not isinstance(file_env_kwargs, dict):
        raise UserError(f"env_kwargs in {args.config} must be a table, not {file_env_kwargs!r}; write [env_kwargs].")
    env_kwargs = {**file_env_kwargs, **parse_assignments(args.env_kwargs, "--env-kwargs")}
    overrides = {**file_config, **parse_assignments(args.set, "--set")}
    spec = RunSpec(
        agent=args.agent,
        env_id=args.env,
        env_kwargs=env_kwargs,
        seed=seed,
        total_steps=args.total_steps,
        total_episodes=args.total_episodes,
        runs_dir=args.runs_dir,
        eval_every=args.eval_every,
        quiet=args.quiet,
        **run_settings(args),
    )
    return spec, overrides, None


def run_settings(args: argparse.Namespace) -> dict:
    """--checkpoint-every and --eval-episodes where given: settings of how a run is kept and evaluated, not of what
    it learns, so a resume may change them too."""
    given = {"checkpoint_every": args.checkpoint_every, "eval_episodes": args.eval_episodes}
    return {name: value for name, value in given.items() if value is not None}


def resume_job(args: argparse.Namespace) -> tuple[Any, dict, Path]:
    """The spec and config a run was started with; --total-steps or --total-episodes may extend its budget, and
    --eval-every, --eval-episodes and --checkpoint-every set how it is evaluated and saved from here on (neither
    changes what is learned)."""
    from rl.run import RunSpec
    from rl.run_logger import read_run_config

    given = {"AGENT": args.agent, "--env": args.env, "--seed": args.seed, "--config": args.config,
             "--set": args.set, "--env-kwargs": args.env_kwargs}  # fmt: skip
    changes = [name for name, value in given.items() if value]
    if changes:
        raise UserError(
            f"--resume continues a run with the config it was started with, so {', '.join(changes)} cannot change "
            f"it; drop {'it' if len(changes) == 1 else 'them'}, or start a new run."
        )
    run_dir = Path(args.resume)
    saved = read_run_config(run_dir, "agent_config", "rl train")
    spec_fields = dict(saved["spec"])
    if args.total_steps is not None or args.total_episodes is not None:
        spec_fields.update(total_steps=args.total_steps, total_episodes=args.total_episodes)
    if args.eval_every is not None:
        spec_fields["eval_every"] = args.eval_every
    spec_fields.update(run_settings(args))
    spec_fields["quiet"] = args.quiet
    try:
        spec = RunSpec(**spec_fields)
    except TypeError as error:
        raise UserError(f"{run_dir / 'config.json'} has a spec `rl train` cannot read ({error}).") from None
    return spec, saved["agent_config"], run_dir


def cmd_eval(args: argparse.Namespace) -> int:
    import envs  # noqa: F401
    from agents.registry import get_agent
    from rl.checkpoint import check_saved_by, load_checkpoint
    from rl.environments import make_env
    from rl.errors import one_line
    from rl.evaluation import evaluate_policy, filmed_env, filmed_evaluation
    from rl.run_logger import read_run_config

    run_dir = Path(args.run_dir)
    saved = read_run_config(run_dir, "agent_config", "rl train")
    spec = saved["spec"]
    entry = get_agent(str(spec.get("agent")))
    arrays, meta = load_checkpoint(run_dir)
    check_saved_by(meta, entry.name, run_dir, "evaluate")
    cfg = build_config(entry.config, saved["agent_config"], entry.name)
    env_id, env_kwargs = spec.get("env_id", ""), spec.get("env_kwargs")
    if args.video is not None:
        env = filmed_env(env_id, env_kwargs, args.video, name_prefix=run_dir.resolve().name)
    else:
        env = make_env(env_id, env_kwargs)
    try:
        act = entry.act_from_checkpoint(arrays, cfg, env)
    except (RuntimeError, KeyError, ValueError) as error:
        raise UserError(
            f"the checkpoint in {run_dir} does not fit its config.json ({one_line(error)}); was config.json edited?"
        ) from None
    if args.video is None:
        returns = evaluate_policy(env, act, args.episodes, seed=args.seed)
        env.close()
    else:
        returns, videos = filmed_evaluation(env, act, args.episodes, args.seed, args.video, run_dir.resolve().name)
        print("\n".join(f"video: {path}" for path in videos))
    summary = {"mean_return": float(returns.mean()), "std_return": float(returns.std()), "episodes": args.episodes}
    print(json.dumps(summary))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    import envs  # noqa: F401
    from agents.planning import PLANNERS
    from rl.environments import make_env
    from rl.mdp import require_model

    env = make_env(args.env, parse_assignments(args.env_kwargs, "--env-kwargs"))
    result = PLANNERS[args.algo](require_model(env, args.env), args.gamma)
    if args.json:
        print(json.dumps({"values": result.values.tolist(), "policy": result.policy.tolist()}))
        return 0
    print(f"{args.algo} on {args.env}, gamma={args.gamma}: converged in {result.iterations} iterations")
    inner = env.unwrapped
    if hasattr(inner, "format_values") and hasattr(inner, "format_policy"):
        print("\noptimal state values:\n" + inner.format_values(result.values))
        print("\noptimal policy:\n" + inner.format_policy(result.policy))
    else:
        print("\nstate  value  action")
        for s, (value, action) in enumerate(zip(result.values, result.policy, strict=True)):
            print(f"{s:5d}  {value:8.3f}  {action}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from agents.registry import AGENTS
    from envs import ENV_DESCRIPTIONS

    print("agents:")
    for entry in AGENTS.values():
        print(f"  {entry.name:22s} {entry.description}")
    print("\nenvironments registered by this package (plus everything in Gymnasium):")
    for env_id, description in ENV_DESCRIPTIONS.items():
        print(f"  {env_id:22s} {description}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from rl.compare import compare

    print(compare([Path(d) for d in args.run_dirs], args.tag, Path(args.out) if args.out else None))
    if args.out:
        print(f"curves written to {args.out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from rl.demo import run_demo

    run_demo(Path(args.runs_dir), args.seed)
    if args.llm:
        from llm_rl.demo import run_llm_demo

        run_llm_demo(Path(args.runs_dir), args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
