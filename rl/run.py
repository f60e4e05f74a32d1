"""A training run: what an agent's `train(cfg, run)` gets besides its hyperparameters.

The run owns the env, the seeded generator, the rollout core, the logger, the budget (steps or episodes), the
learned state that checkpoints save, the greedy evaluations and the stop signal (SIGINT, SIGTERM). Agents keep their
loop and their math; the run keeps the bookkeeping that every agent would otherwise repeat.

    q = run.state("q", np.zeros((n_states, n_actions)))    # restored on resume, saved at every checkpoint
    act = run.evaluate_during_training(greedy_act)          # evaluated every --eval-every steps, if asked
    while run.keep_going():                                 # budget, stop signal, logging, checkpoints, evaluations
        transition = run.rollout.step(action)
    return run.evaluate(act)                                # the final evaluation
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import VectorEnv

from rl.checkpoint import (
    CHECKPOINT_FILE,
    atomic_write_bytes,
    check_budget_left,
    check_saved_by,
    flatten_state,
    load_checkpoint,
    save_checkpoint,
    unflatten_state,
)
from rl.config import MAX_SEED, config_dict
from rl.environments import make_env, make_vector_env
from rl.errors import Diverged, UserError, one_line
from rl.evaluation import evaluate_policy
from rl.rollout import Rollout
from rl.run_logger import CONFIG_FILE, RunLogger, new_run_dir
from rl.seeding import generator_state, restore_generator, seed_everything

EVENTS_GLOB = "events.out.tfevents.*"
"""TensorBoard's event files in a run directory."""


class Stateful(Protocol):
    """Anything with a state dict: torch modules and optimisers, the replay buffer."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


StatefulT = TypeVar("StatefulT", bound=Stateful)


@dataclass(frozen=True)
class RunSpec:
    """What to train on and for how long; the agent's hyperparameters live in its own Config."""

    agent: str
    env_id: str
    env_kwargs: dict = field(default_factory=dict)
    seed: int = 0
    total_steps: int | None = None
    """Stop after this many environment steps."""
    total_episodes: int | None = None
    """Stop after this many finished episodes."""
    runs_dir: str = "runs"
    checkpoint_every: int = 50_000
    """Save a checkpoint every this many environment steps (and always at the end or on a stop signal)."""
    eval_episodes: int = 10
    """Greedy episodes in the final evaluation (and in each evaluation during training)."""
    eval_every: int | None = None
    """Also evaluate the greedy policy every this many environment steps while training; None: only at the end."""
    print_every: int = 10_000
    """Print one progress line every this many environment steps."""
    quiet: bool = False
    """No progress bar or lines (tests)."""

    def __post_init__(self) -> None:
        if self.total_steps is None and self.total_episodes is None:
            raise UserError("no training budget; pass --total-steps N or --total-episodes N.")
        for name in ("total_steps", "total_episodes"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UserError(f"{name} must be positive, not {value}; pass a positive number.")
        for name in ("checkpoint_every", "eval_episodes", "print_every", "eval_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, not {getattr(self, name)}; pass 1 or more.")
        if not 0 <= self.seed <= MAX_SEED:
            raise UserError(f"seed must be an integer from 0 to {MAX_SEED}, not {self.seed}; pass another --seed.")


class Run:
    """One run directory: env, generator, rollout, logger, learned state and checkpoints."""

    def __init__(self, spec: RunSpec, config: Any, run_dir: Path | None = None) -> None:
        """Starts a new run, or resumes the one in `run_dir` from its checkpoint. `config` is the agent's Config (or
        its dict): config.json records it, and `rl train --resume` and `rl eval` rebuild the agent from it."""
        if dataclasses.is_dataclass(config):
            config = config_dict(config)
        self.spec = spec
        self.env = make_env(spec.env_id, spec.env_kwargs)
        self.rng = seed_everything(spec.seed)
        self.stop_requested = False
        self._arrays: dict[str, np.ndarray] = {}
        self._objects: dict[str, Stateful] = {}
        # A resumed run's checkpoint arrays; `track` drops an object's arrays once it has copied them into the object:
        # a replay buffer's are gigabytes on Atari, and a second copy must not live as long as the run.
        self._restored: dict[str, np.ndarray] = {}
        self._restored_meta: dict[str, Any] = {}
        self._resumed = run_dir is not None
        global_step, episodes = 0, 0
        if run_dir is not None:
            self._restored, self._restored_meta = load_checkpoint(run_dir)
            global_step, episodes = self._check_resumable(Path(run_dir))
            restore_generator(self.rng, self._restored_meta["rng"])
            torch.set_rng_state(torch.from_numpy(self._restored.pop("torch_rng")))
        self._env_seed = spec.seed + global_step  # on resume a fresh episode: a mid-episode env state is not saved.
        self._start_step = global_step
        self.rollout = start_rollout(self.env, self._env_seed, global_step, episodes, spec.env_id)
        self.run_dir = (
            Path(run_dir) if run_dir is not None else new_run_dir(spec.runs_dir, spec.env_id, spec.agent, spec.seed)
        )
        self._earlier_events = set(self.run_dir.glob(EVENTS_GLOB))
        self._earlier_config = (self.run_dir / CONFIG_FILE).read_bytes() if run_dir is not None else b""
        full_config = {"spec": {**spec.__dict__}, "agent_config": config}
        self.logger = RunLogger(
            self.run_dir,
            full_config,
            total=spec.total_steps,
            initial_step=global_step,
            print_every=spec.print_every,
            quiet=spec.quiet,
        )
        self._next_checkpoint = global_step + spec.checkpoint_every
        self._announcement: str | None = None
        self._started = False
        self._policy_to_evaluate: Callable[[Any], Any] | None = None
        self._next_eval = next_multiple(global_step, spec.eval_every) if spec.eval_every else math.inf

    def announce(self, text: str) -> None:
        """A line printed when training starts (the first `keep_going`), not before: an agent that refuses the env's
        spaces stops before that, and its run directory, removed on the way out, should not have been named."""
        self._announcement = text

    def evaluate_during_training(self, act: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """Registers the greedy policy `act(obs)` that `--eval-every N` evaluates every N environment steps while the
        run trains, logging `eval/episodic_return` there; returns `act`. Register it before the training loop. It must
        read the learned state as it changes (a closure over the network or table being trained) and draw from none
        of training's random streams, so that evaluating leaves what is learned as it would have been."""
        self._policy_to_evaluate = act
        return act

    def _check_resumable(self, run_dir: Path) -> tuple[int, int]:
        """The checkpoint's step and episode count, once it is known to be this agent's and to have budget left."""
        meta, spec = self._restored_meta, self.spec
        check_saved_by(meta, spec.agent, run_dir, "resume")
        global_step, episodes = int(meta.get("global_step", 0)), int(meta.get("episodes", 0))
        for name, done in (("total_steps", global_step), ("total_episodes", episodes)):
            budget = getattr(spec, name)
            if budget is not None:
                check_budget_left(run_dir, done, budget, name, "--" + name.replace("_", "-"))
        return global_step, episodes

    @property
    def resumed(self) -> bool:
        return self._resumed

    def state(self, name: str, initial: np.ndarray) -> np.ndarray:
        """Registers an array of learned state: the checkpoint's copy when resuming, else `initial`.

        Update it in place (`q[s, a] += ...`, `policy[:] = ...`): checkpoints save whatever it holds then.
        """
        if name in self._restored:
            restored = self._restored[name]
            if restored.shape != initial.shape:
                raise UserError(
                    f"checkpoint array {name!r} has shape {restored.shape} but this run needs {initial.shape}; "
                    "resume with the env and config the run was started with."
                )
            initial = restored.astype(initial.dtype, copy=True)
        self._arrays[name] = initial
        return initial

    def track(self, name: str, obj: StatefulT) -> StatefulT:
        """Registers an object with `state_dict()` and `load_state_dict()` (a network, an optimiser, a replay buffer):
        restored now when resuming, saved at every checkpoint. Returns `obj`."""
        skeletons = self._restored_meta.get("objects", {})
        if name in skeletons:
            try:
                obj.load_state_dict(unflatten_state(skeletons[name], self._restored))
            except (RuntimeError, ValueError, KeyError) as error:
                raise UserError(
                    f"checkpoint state {name!r} does not fit this run ({one_line(error)}); "
                    "resume with the env and config the run was started with."
                ) from None
            for key in [key for key in self._restored if key.startswith(f"{name}.")]:
                del self._restored[key]  # `obj` holds its own copy now
        self._objects[name] = obj
        return obj

    def vector_rollout(self, num_envs: int, clip_reward: float = 0.0) -> Rollout:
        """Moves the run onto N copies of its env stepping together; env i is seeded with seed + i. With
        `clip_reward` > 0 the transitions carry rewards clipped to +-clip_reward, the logged returns the env's."""
        if self.spec.total_steps is not None and num_envs > self.spec.total_steps:
            raise UserError(
                f"num_envs={num_envs} is more than the budget of {self.spec.total_steps} steps, which one step of all "
                "the envs together would overrun; lower num_envs (--set num_envs=N) or raise --total-steps."
            )
        self.env.close()
        self.env = make_vector_env(self.spec.env_id, num_envs, self.spec.env_kwargs)
        self.rollout = start_rollout(
            self.env, self._env_seed, self.rollout.global_step, self.rollout.episodes, self.spec.env_id, clip_reward
        )
        return self.rollout

    def keep_going(self) -> bool:
        """Logs what finished since the last call, checkpoints when due; False once the budget is spent or a stop
        signal came."""
        step = self.rollout.global_step
        if not self._started:
            self._start()
        if self.rollout.finished:  # most steps finish nothing: skip the call and the fresh empty list
            self.logger.episodes(self.rollout.pop_finished(), step)
        self.logger.progress(step)
        if step >= self._next_checkpoint:
            self.save()
            self._next_checkpoint = step + self.spec.checkpoint_every
        if self.stop_requested:
            return False
        if self.budget_spent:
            self.logger.progress(step, final=True)  # the SPS of the last stretch: short runs log it at least once
            return False
        if step >= self._next_eval:  # not at the end: the agent's final evaluation follows
            self._evaluate_now(step)
            return not self.stop_requested  # a stop signal during the evaluation ends the run now
        return True

    def _start(self) -> None:
        """The first `keep_going`: the agent has built what it trains and registered its policy, if it has one."""
        self._started = True
        if self.spec.eval_every and self._policy_to_evaluate is None:
            raise UserError(
                f"{self.spec.agent} learns the values of a policy it is given and does not change, so --eval-every "
                "has no improving policy to evaluate; drop --eval-every (the final evaluation runs that policy)."
            )
        if self._announcement is not None:
            self.logger.line(self._announcement)
            self._announcement = None

    def _evaluate_now(self, step: int) -> None:
        """An evaluation during training; its time is left out of charts/SPS."""
        start = time.perf_counter()
        self.evaluate(self._policy_to_evaluate, label=f"evaluation at step {step}")
        self.logger.leave_out(time.perf_counter() - start)
        self._next_eval = next_multiple(step, self.spec.eval_every)

    @property
    def budget_spent(self) -> bool:
        """Whether the run has taken its steps or finished its episodes."""
        out_of_steps = self.spec.total_steps is not None and self.rollout.global_step >= self.spec.total_steps
        out_of_episodes = self.spec.total_episodes is not None and self.rollout.episodes >= self.spec.total_episodes
        return out_of_steps or out_of_episodes

    def log(self, tag: str, value: float) -> None:
        """A scalar at the current global environment step."""
        self.logger.scalar(tag, float(value), self.rollout.global_step)

    def evaluate(self, act: Any, episodes: int | None = None, label: str = "greedy evaluation") -> np.ndarray:
        """Runs the greedy policy `act(obs)` on a fresh env and logs `eval/episodic_return`; `label` starts the printed
        line (a prediction agent runs the policy whose values it learned). A stop signal, before or during it,
        ends it after the running episode with no point logged, so that Ctrl-C ends a run promptly (`rl eval`
        evaluates the checkpoint later); the episodes finished by then come back."""
        env = make_env(self.spec.env_id, self.spec.env_kwargs)
        episodes = episodes or self.spec.eval_episodes
        returns = evaluate_policy(env, act, episodes, seed=self.spec.seed + 10_000, stop=lambda: self.stop_requested)
        env.close()
        if len(returns) == episodes:
            self.log("eval/episodic_return", returns.mean())
            self.logger.line(f"{label}: mean return {returns.mean():.2f} over {episodes} episodes")
        return returns

    def save(self) -> Path:
        arrays = {**self._arrays, "torch_rng": torch.get_rng_state().numpy()}
        objects = {name: flatten_state(obj.state_dict(), name, arrays) for name, obj in self._objects.items()}
        meta = {
            "agent": self.spec.agent,
            "global_step": self.rollout.global_step,
            "episodes": self.rollout.episodes,
            "rng": generator_state(self.rng),
            "objects": objects,
        }
        return save_checkpoint(self.run_dir, arrays, meta)

    def __enter__(self) -> Run:
        self._previous_handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in self._previous_handlers:
            signal.signal(sig, self._request_stop)
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        self.logger.close()
        self.env.close()
        if exc_type is not None and issubclass(exc_type, Diverged):
            # Non-finite weights: the last checkpoint is worth more than they are; without one the run has nothing.
            if not (self.run_dir / CHECKPOINT_FILE).exists():
                shutil.rmtree(self.run_dir)
            return
        if exc_type is None or self.rollout.global_step > self._start_step:
            self.save()  # finished, stopped, or crashed mid-run: keep what was learned
        elif not self.resumed:
            shutil.rmtree(self.run_dir)  # failed before the first step (a bad space, say): leave no empty run behind
        else:
            self._undo_failed_resume()

    def _undo_failed_resume(self) -> None:
        """A resume that failed before its first step leaves the run as it found it: the checkpoint unsaved (the state
        now may be only partly restored: a network that did not fit an edited config), config.json and the events."""
        atomic_write_bytes(self.run_dir / CONFIG_FILE, self._earlier_config)
        for events in set(self.run_dir.glob(EVENTS_GLOB)) - self._earlier_events:
            events.unlink()

    def _request_stop(self, signum: int, frame: object) -> None:
        self.stop_requested = True


def next_multiple(step: int, every: int) -> int:
    """The first multiple of `every` after `step`."""
    return (step // every + 1) * every


def start_rollout(
    env: gym.Env | VectorEnv, seed: int, global_step: int, episodes: int, env_id: str, clip_reward: float = 0.0
) -> Rollout:
    """A rollout on `env`, whose first reset may fail on what `gymnasium.make` could not check (render_mode="human"
    without pygame): that is a UserError."""
    try:
        return Rollout(env, seed, global_step, episodes, clip_reward)
    except gym.error.Error as error:
        raise UserError(f"cannot reset env {env_id!r}: {one_line(error)}; check the env's kwargs and extras.") from None
