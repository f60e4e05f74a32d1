"""Config parsing: JSON-or-string values, type checks, unknown keys, field docs."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from rl.config import build_config, field_docs, load_toml, parse_assignments, parse_value
from rl.errors import UserError


@dataclass(frozen=True)
class ToyConfig:
    gamma: float = 0.9
    """Discount factor."""
    n: int = 3
    """Steps before bootstrapping."""
    epsilon_end: float | None = None
    """Final epsilon, if it decays."""
    start: tuple[int, ...] = (1, 1)
    """A cell."""
    double: bool = False
    name: str = "x"

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be at least 1, not {self.n}")


def test_parse_value():
    assert parse_value("0.5") == 0.5
    assert parse_value("3") == 3
    assert parse_value("true") is True
    assert parse_value("[1, 1]") == [1, 1]
    assert parse_value("null") is None
    assert parse_value("uniform") == "uniform"


def test_parse_assignments():
    assert parse_assignments(["gamma=0.5", "start=[2,3]", "name=a=b"], "--set") == {
        "gamma": 0.5,
        "start": [2, 3],
        "name": "a=b",
    }
    with pytest.raises(UserError, match="KEY=VALUE"):
        parse_assignments(["gamma"], "--set")


def test_build_config_coerces_and_checks():
    cfg = build_config(ToyConfig, {"gamma": 1, "start": [2, 3], "epsilon_end": 0.05, "n": 5.0}, "toy")
    assert cfg == ToyConfig(gamma=1.0, n=5, epsilon_end=0.05, start=(2, 3))
    assert isinstance(cfg.gamma, float) and isinstance(cfg.n, int)
    assert build_config(ToyConfig, {"epsilon_end": None}, "toy").epsilon_end is None


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"gama": 0.9}, "no config key 'gama'; valid keys are: gamma, n"),
        ({"n": "three"}, "'n' must be int"),
        ({"n": 2.5}, "'n' must be int"),
        ({"double": 1}, "'double' must be bool"),
        ({"gamma": "high"}, "'gamma' must be float"),
        ({"start": 3}, "'start' must be"),
        ({"n": 0}, "n must be at least 1"),
    ],
)
def test_build_config_errors(overrides, message):
    with pytest.raises(UserError, match=message):
        build_config(ToyConfig, overrides, "toy")


def test_field_docs():
    docs = field_docs(ToyConfig)
    assert docs["gamma"] == "Discount factor."
    assert docs["epsilon_end"] == "Final epsilon, if it decays."
    assert "double" not in docs


@dataclass(frozen=True)
class ToySubConfig(ToyConfig):
    gamma: float = 0.5
    """Discount factor of the variant."""
    tau: float = 0.1
    """Averaging rate."""


def test_field_docs_include_the_base_class_fields():
    docs = field_docs(ToySubConfig)
    assert docs["epsilon_end"] == "Final epsilon, if it decays."  # inherited
    assert docs["gamma"] == "Discount factor of the variant." and docs["tau"] == "Averaging rate."


def test_load_toml(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("gamma = 0.5\n[env_kwargs]\nstart = [1, 1]\n")
    assert load_toml(path) == {"gamma": 0.5, "env_kwargs": {"start": [1, 1]}}
    path.write_text("gamma = = 0.5\n")
    with pytest.raises(UserError, match="not valid TOML"):
        load_toml(path)
    with pytest.raises(UserError, match="does not exist"):
        load_toml(tmp_path / "missing.toml")
