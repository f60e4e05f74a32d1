"""Feature vectors x(s) for linear value functions: Zhao, *Mathematical Foundations of RL*, section 8.2; Sutton &
Barto, section 9.5.

A linear value function is v(s, w) = w . x(s), and a linear action value keeps one weight vector per action,
q(s, a, w) = w_a . x(s). Every map here returns x(s) in sparse form, the indices of its nonzero features and their
values, so a tile-coded value is a sum of a handful of weights and a dense map lists all of its features.

    one_hot      x_i(s) = 1 if i = s else 0 (Discrete states); linear TD with it is tabular TD.
    polynomial   x(s) = every monomial s_1^c_1 ... s_d^c_d of total degree c_1 + ... + c_d <= order, with each
                 coordinate scaled to [-1, 1]: order 1 is [1, x, y], order 2 adds x^2, xy, y^2 (Zhao 8.2's grid).
    fourier      x_c(s) = cos(pi c . s) for every integer vector c in {0, ..., order}^d, coordinates scaled to
                 [0, 1]: (order + 1)^d features (S&B 9.5.2, Zhao 8.2).
    tile         `tilings` grids of tiles_per_dim tiles per dimension over the bounds, each shifted by a fraction
                 of a tile; x(s) has one active tile per tiling (S&B 9.5.4).

The coordinates of a state: a Box observation scaled by its bounds (the space's, or the `bounds` given); a
Discrete state of a grid env (one whose unwrapped env has `rows` and `cols`, as GridWorld-v0) as its (row, col)
cell; any other Discrete state as its index along one axis.

Deviations from the books:
1. The polynomial basis takes total degree <= order, as Zhao's grid-world example does, rather than S&B's full
   product basis with each exponent <= order ((order + 1)^d features); the count grows far slower with d.
2. Tiling i is shifted by (i (2j + 1) mod tilings) / tilings of a tile width along dimension j: S&B's asymmetric
   displacement (1, 3, 5, ...), taken modulo one tile. Each tiling has tiles_per_dim + 1 tiles per dimension so
   that the shifted grid still covers the bounds.
3. An observation outside the bounds is clipped to them: it shares the edge tiles (or edge coordinates).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from rl.errors import UserError

FEATURE_KINDS = ("one_hot", "polynomial", "fourier", "tile")
MAX_DENSE_FEATURES = 10_000
"""Polynomial and Fourier features are dense: every step touches each one, so more than this is too slow to learn."""
MAX_TILES = 2_000_000
"""Tile coding keeps a weight per tile and action; more tiles than this would not fit comfortably in memory."""
BOUNDS_EXAMPLE = "e.g. bounds=[[-2.4, 2.4], [-3, 3], [-0.21, 0.21], [-3.5, 3.5]] for CartPole-v1"


@dataclass(frozen=True, slots=True)
class Features:
    """x(s) in sparse form: x has `values` at `indices` and zeros elsewhere."""

    indices: np.ndarray
    """(K,) int indices of the nonzero features, all different."""
    values: np.ndarray
    """(K,) their values."""

    def dense(self, n_features: int) -> np.ndarray:
        """(n_features,) the full vector x(s)."""
        x = np.zeros(n_features)
        x[self.indices] = self.values
        return x


class FeatureMap(Protocol):
    """s -> x(s)."""

    n_features: int

    def __call__(self, obs: Any) -> Features: ...


# ---- coordinates: where a state lies, scaled to [0, 1]^d ----


class UnitCoordinates:
    """Maps an observation to a point in [0, 1]^d: a Box by its bounds, a Discrete state by a lookup table."""

    def __init__(self, low: np.ndarray, high: np.ndarray, table: np.ndarray | None = None, start: int = 0) -> None:
        self.low, self.width = low.astype(np.float64), (high - low).astype(np.float64)
        self.table = table
        """(S, d) the point of each Discrete state, or None for a Box."""
        self.start = start
        """The first Discrete state (`Discrete(n, start=...)`): state s is row s - start of the table."""
        self.dims = len(low) if table is None else table.shape[1]

    def __call__(self, obs: Any) -> np.ndarray:
        """(d,) the point of `obs` in [0, 1]^d."""
        if self.table is not None:
            return self.table[int(obs) - self.start]
        return np.clip((np.asarray(obs, dtype=np.float64).ravel() - self.low) / self.width, 0.0, 1.0)


def unit_coordinates(
    observation_space: gym.Space, env: gym.Env | None, bounds: Sequence[Sequence[float]] | None, kind: str
) -> UnitCoordinates:
    """The coordinates `kind` features are built on; a UserError for a space they cannot describe."""
    if isinstance(observation_space, gym.spaces.Discrete):
        points = discrete_points(observation_space, env)
        return UnitCoordinates(np.zeros(0), np.ones(0), points, int(observation_space.start))
    if not isinstance(observation_space, gym.spaces.Box):
        raise UserError(
            f"{kind} features need a Box or Discrete observation space, not {observation_space}; "
            "wrap the env so that it observes an array of numbers, in a module:Name-v0 env of your own."
        )
    low, high = box_bounds(observation_space, bounds, kind)
    return UnitCoordinates(low, high)


def discrete_points(space: gym.spaces.Discrete, env: gym.Env | None) -> np.ndarray:
    """(S, d) the unit coordinates of each state: (row, col) for a grid env, else the index along one axis."""
    n = int(space.n)
    inner = env.unwrapped if env is not None else None
    rows, cols = getattr(inner, "rows", None), getattr(inner, "cols", None)
    if isinstance(rows, int) and isinstance(cols, int) and rows * cols == n:
        # State index s = (row - 1) * cols + (col - 1), as GridWorld numbers its cells.
        cells = np.stack(np.divmod(np.arange(n), cols), axis=1).astype(np.float64)
        return cells / np.maximum(np.array([rows - 1, cols - 1]), 1)
    return (np.arange(n, dtype=np.float64) / max(n - 1, 1))[:, None]


def box_bounds(space: gym.spaces.Box, bounds: Sequence[Sequence[float]] | None, kind: str) -> tuple[np.ndarray, ...]:
    """(low, high) of each flattened dimension: the given `bounds`, else the space's own when all are finite."""
    dims = int(np.prod(space.shape))
    if bounds is not None:
        pairs = np.asarray(bounds, dtype=np.float64)
        if pairs.shape != (dims, 2) or not np.all(np.isfinite(pairs)) or np.any(pairs[:, 0] >= pairs[:, 1]):
            raise UserError(
                f"bounds={[list(b) for b in bounds]} is not one finite [low, high] pair with low < high for each "
                f"of the {dims} observation dimensions; pass {dims} pairs ({BOUNDS_EXAMPLE})."
            )
        return pairs[:, 0], pairs[:, 1]
    low, high = space.low.astype(np.float64).ravel(), space.high.astype(np.float64).ravel()
    # Gymnasium marks an unbounded dimension with inf or with float32's largest value (CartPole's velocities).
    sentinel = np.finfo(np.float32).max
    unbounded = np.flatnonzero(~np.isfinite(low) | ~np.isfinite(high) | (np.abs(low) >= sentinel) | (high >= sentinel))
    if len(unbounded):
        raise UserError(
            f"{kind} features scale each observation dimension by its bounds, but dimensions "
            f"{unbounded.tolist()} of {space} are unbounded; pass bounds=[[low, high], ...] for every dimension "
            f"({BOUNDS_EXAMPLE}) or wrap the env to clip them."
        )
    return low, high


# ---- the feature maps ----


class OneHot:
    """x(s) = e_s, the unit vector of state s: a table, written as a linear function."""

    def __init__(self, n_states: int) -> None:
        self.n_features = n_states
        self._one = np.ones(1)

    def __call__(self, obs: Any) -> Features:
        return Features(np.array([int(obs)]), self._one)


class Polynomial:
    """x(s) = every monomial of the coordinates (scaled to [-1, 1]) of total degree <= order."""

    def __init__(self, coordinates: UnitCoordinates, order: int) -> None:
        self.coordinates = coordinates
        self.exponents = polynomial_exponents(coordinates.dims, order)
        """(n, d) exponent c_ij of coordinate j in feature i."""
        self.n_features = len(self.exponents)
        self._indices = np.arange(self.n_features)

    def __call__(self, obs: Any) -> Features:
        point = 2.0 * self.coordinates(obs) - 1.0
        return Features(self._indices, np.prod(point**self.exponents, axis=1))


class Fourier:
    """x_c(s) = cos(pi c . s) for every c in {0, ..., order}^d, with s scaled to [0, 1]^d."""

    def __init__(self, coordinates: UnitCoordinates, order: int) -> None:
        self.coordinates = coordinates
        self.frequencies = np.array(list(itertools.product(range(order + 1), repeat=coordinates.dims)), dtype=float)
        """(n, d) the integer vectors c, the first all zeros (the constant feature)."""
        self.n_features = len(self.frequencies)
        self._indices = np.arange(self.n_features)

    def __call__(self, obs: Any) -> Features:
        return Features(self._indices, np.cos(np.pi * (self.frequencies @ self.coordinates(obs))))


class TileCoding:
    """`tilings` offset grids over the bounds; x(s) is 1 on the one tile of each tiling that holds s."""

    def __init__(self, coordinates: UnitCoordinates, tilings: int, tiles_per_dim: int) -> None:
        self.coordinates = coordinates
        self.tiles_per_dim = tiles_per_dim
        dims, side = coordinates.dims, tiles_per_dim + 1  # one extra tile per dimension covers the shifted edge
        self.offsets = tile_offsets(tilings, dims)
        """(tilings, d) how far each tiling is shifted along each dimension, in tile widths, in [0, 1)."""
        self.strides = side ** np.arange(dims - 1, -1, -1)
        """(d,) row-major strides of a tile's (d,) grid coordinates within its tiling."""
        self.starts = np.arange(tilings) * side**dims
        """(tilings,) the index of each tiling's first tile."""
        self.n_features = tilings * side**dims
        self._ones = np.ones(tilings)

    def __call__(self, obs: Any) -> Features:
        scaled = self.coordinates(obs) * self.tiles_per_dim  # (d,) in [0, tiles_per_dim]
        grid = np.floor(scaled + self.offsets).astype(np.int64)  # (tilings, d) in [0, tiles_per_dim]
        return Features(grid @ self.strides + self.starts, self._ones)


def polynomial_exponents(dims: int, order: int) -> np.ndarray:
    """(n, d) every exponent vector of total degree <= order, by degree: [0,0], [1,0], [0,1], [2,0], [1,1], ..."""
    by_degree = sorted(
        (c for c in itertools.product(range(order + 1), repeat=dims) if sum(c) <= order),
        key=lambda c: (sum(c), [-e for e in c]),
    )
    return np.array(by_degree, dtype=float)


def tile_offsets(tilings: int, dims: int) -> np.ndarray:
    """(tilings, d) S&B's asymmetric offsets: tiling i moves (i (2j + 1) mod tilings) / tilings along dimension j."""
    return (np.outer(np.arange(tilings), 2 * np.arange(dims) + 1) % tilings) / tilings


# ---- building a map from its settings ----


def make_features(
    kind: str,
    observation_space: gym.Space,
    env: gym.Env | None = None,
    order: int = 3,
    tilings: int = 8,
    tiles_per_dim: int = 8,
    bounds: Sequence[Sequence[float]] | None = None,
) -> FeatureMap:
    """The feature map `kind` on `observation_space`; a UserError for settings that cannot fit the space.

    `env` lets Discrete grid envs give their (row, col) cells; `bounds` replaces a Box's own bounds.
    """
    builders: dict[str, Callable[[], FeatureMap]] = {
        "one_hot": lambda: one_hot_features(observation_space),
        "polynomial": lambda: polynomial_features(unit_coordinates(observation_space, env, bounds, kind), order),
        "fourier": lambda: fourier_features(unit_coordinates(observation_space, env, bounds, kind), order),
        "tile": lambda: tile_features(unit_coordinates(observation_space, env, bounds, kind), tilings, tiles_per_dim),
    }
    if kind not in builders:
        raise UserError(f"unknown features {kind!r}; choose one of {', '.join(map(repr, FEATURE_KINDS))}.")
    return builders[kind]()


def one_hot_features(space: gym.Space) -> OneHot:
    if not isinstance(space, gym.spaces.Discrete) or space.start != 0:
        raise UserError(
            f"one_hot features need a Discrete observation space starting at 0, not {space}; "
            "use features='tile' (with bounds for unbounded dimensions), 'fourier' or 'polynomial'."
        )
    return OneHot(int(space.n))


def polynomial_features(coordinates: UnitCoordinates, order: int) -> Polynomial:
    check_dense_count("polynomial", order, coordinates.dims, math.comb(order + coordinates.dims, order))
    return Polynomial(coordinates, order)


def fourier_features(coordinates: UnitCoordinates, order: int) -> Fourier:
    check_dense_count("fourier", order, coordinates.dims, (order + 1) ** coordinates.dims)
    return Fourier(coordinates, order)


def tile_features(coordinates: UnitCoordinates, tilings: int, tiles_per_dim: int) -> TileCoding:
    count = tilings * (tiles_per_dim + 1) ** coordinates.dims
    if count > MAX_TILES:
        raise UserError(
            f"tile coding with {tilings} tilings of {tiles_per_dim + 1}^{coordinates.dims} tiles makes {count:,} "
            f"features, over the cap of {MAX_TILES:,}; lower tiles_per_dim or tilings."
        )
    return TileCoding(coordinates, tilings, tiles_per_dim)


def check_dense_count(kind: str, order: int, dims: int, count: int) -> None:
    """A UserError when a dense basis has more features than can be learned at a useful speed."""
    if count > MAX_DENSE_FEATURES:
        raise UserError(
            f"{kind} features of order {order} on {dims} dimensions make {count:,} features, over the cap of "
            f"{MAX_DENSE_FEATURES:,} (each is touched at every step); lower order, or use features='tile'."
        )
