"""Configs are frozen dataclasses; this module fills them from TOML files and `KEY=VALUE` pairs, checking types.

Values given on the command line are parsed as JSON where they parse (`0.5`, `true`, `[1, 1]`, `null`) and taken
as strings otherwise. A key the dataclass lacks, or a value of the wrong type, is a UserError naming the field.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import math
import os
import sys
import textwrap
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rl.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def parse_value(text: str) -> Any:
    """JSON where it parses, else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_assignments(items: list[str] | None, flag: str) -> dict[str, Any]:
    """`["gamma=0.9", "start=[1,1]"]` -> `{"gamma": 0.9, "start": [1, 1]}`."""
    result = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"{flag} expects KEY=VALUE, got {item!r}; write it like {flag} gamma=0.9.")
        result[key.strip()] = parse_value(value)
    return result


MAX_SEED = 2**32 - 1
"""Seeds run from 0 to this (NumPy's legacy seeding and most envs take 32-bit seeds)."""


def at_least(minimum: float, kind: Callable[[str], float] = int, maximum: float | None = None) -> Callable[[str], Any]:
    """An argparse type: a number (an int, or a float if `kind` is float) from `minimum` up to `maximum`."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not value >= minimum:  # NaN too
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}; pass {minimum} or more")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{value} is above {maximum}; pass {maximum} or less")
        return value

    return parse


def seed_type() -> Callable[[str], int]:
    """An argparse type for seeds: 0 to MAX_SEED."""
    return at_least(0, int, MAX_SEED)


def threads_type() -> Callable[[str], int]:
    """An argparse type for torch CPU threads: 1 to this machine's core count."""
    return at_least(1, int, os.cpu_count() or 1)


def load_toml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist; check the path given to --config.") from None
    except IsADirectoryError:
        raise UserError(f"config file {path} is a directory; pass a TOML file to --config.") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"config file {path} is not valid TOML ({error}); fix the line it names.") from None


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass and of its dataclass bases (Python keeps them only in the
    source); a subclass's docstring wins over its base's."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs |= own_field_docs(klass)
    return docs


def own_field_docs(cls: type) -> dict[str, str]:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body
    docs = {}
    for node, following in zip(body, body[1:], strict=False):
        is_doc = isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and is_doc:
            docs[node.target.id] = " ".join(str(following.value.value).split())
    return docs


def build_config(cls: type, overrides: dict[str, Any], owner: str) -> Any:
    """An instance of the dataclass `cls` with `overrides` applied over its defaults, each value type-checked."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in overrides.items():
        if key not in names:
            raise UserError(f"{owner} has no config key {key!r}; valid keys are: {', '.join(names)}.")
        values[key] = coerce(value, hints[key], f"{owner} config key {key!r}")
    try:
        cfg = cls(**values)
    except ValueError as error:
        raise UserError(f"bad {owner} config: {error}; fix it with --set KEY=VALUE or in the --config file.") from None
    check_shared_rules(cfg, owner)
    return cfg


def check_shared_rules(cfg: Any, owner: str) -> None:
    """What holds for every config, whatever its own checks: see `shared_rule_broken`; and a device is one that torch
    can use on this machine."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        broken = shared_rule_broken(f.name, value)
        if broken:
            raise UserError(
                f"{owner} config key {f.name!r} {broken}, not {value!r}; fix it with --set or in the --config file."
            )
        if f.name == "device" and isinstance(value, str):
            check_device(value, f"{owner} config key 'device'")


def shared_rule_broken(name: str, value: Any) -> str | None:
    """The rule a config value breaks, by the field's name: no NaN anywhere; learning rates finite and positive; Adam's
    betas in [0, 1); gradient-norm caps positive; optimiser eps (*_eps) not negative; layer widths at least 1;
    log_std_init in [-20, 5]; exploration rates (epsilon*) in [0, 1]; step counts (*_steps, learning_starts) and
    clip_reward (0: no clipping) not negative. None if it breaks none."""
    items = value if isinstance(value, (list, tuple)) else [value]
    numbers = [v for v in items if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if any(isinstance(v, float) and math.isnan(v) for v in numbers):
        return "must be a number"
    if not numbers:
        return None
    if name == "learning_rate" or name.endswith("_learning_rate"):
        return None if math.isfinite(value) and value > 0 else "must be positive and finite"
    if name == "adam_betas":
        return None if all(0 <= v < 1 for v in numbers) else "must be two numbers in [0, 1)"
    if name == "max_grad_norm":
        return None if value > 0 else "must be positive"
    if name == "hidden_sizes":
        return None if all(isinstance(v, int) and v >= 1 for v in numbers) else "must list layer widths of 1 or more"
    if name.startswith("epsilon") and isinstance(value, float):
        return None if 0 <= value <= 1 else "must be in [0, 1]"
    if name == "log_std_init":  # exp(log_std_init) is a Gaussian policy's first standard deviation
        return None if -20 <= value <= 5 else "must be in [-20, 5]"
    if name.endswith("_eps"):
        return None if value >= 0 else "must not be negative"
    if name.endswith("_steps") or name in ("learning_starts", "clip_reward"):
        return None if value >= 0 else "must not be negative"
    return None


def check_device(name: str, what: str = "device") -> None:
    """A UserError unless torch can put tensors on `name` ("cpu", "cuda", "cuda:1", "mps") on this machine."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"{what}: {name!r} is not a torch device; use cpu or cuda (cuda:N for GPU N).") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"{what}: {name!r} needs CUDA, which is not available here; use device cpu.")
        if device.index is not None and device.index >= count:
            raise UserError(f"{what}: {name!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}.")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{what}: {name!r} needs Apple's MPS, which is not available here; use device cpu.")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"{what}: {name!r} is not supported; use cpu or cuda.")


def coerce(value: Any, hint: Any, what: str) -> Any:
    """`value` as the type `hint` asks for, or a UserError; ints widen to floats, lists become tuples."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return coerce(value, option, what)
            except UserError:
                continue
        raise _type_error(value, hint, what)
    if hint is Any:
        return value
    if hint is type(None):
        if value is None:
            return None
        raise _type_error(value, hint, what)
    if origin is typing.Literal:
        if value in args:
            return value
        raise UserError(f"{what} must be one of {', '.join(map(repr, args))}, not {value!r}.")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _type_error(value, hint, what)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            items = [coerce(v, args[0], what) for v in value]
        elif origin is tuple and args:
            if len(args) != len(value):
                raise _type_error(value, hint, what)
            items = [coerce(v, a, what) for v, a in zip(value, args, strict=True)]
        else:
            items = [coerce(v, args[0], what) for v in value] if args else list(value)
        return tuple(items) if origin is tuple else items
    if origin is dict or hint is dict:
        if isinstance(value, dict):
            return value
        raise _type_error(value, hint, what)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(value, hint, what)
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _type_error(value, hint, what)
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _type_error(value, hint, what)
    if hint is str:
        if isinstance(value, str):
            return value
        raise _type_error(value, hint, what)
    return value


def _type_error(value: Any, hint: Any, what: str) -> UserError:
    name = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
    return UserError(f"{what} must be {name}, not {value!r}; fix the value given to --set or the config file.")


def config_dict(cfg: Any) -> dict[str, Any]:
    """A config dataclass as a JSON-friendly dict."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
