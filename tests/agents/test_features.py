"""Feature maps: vectors by hand, tile indices with known offsets, sparsity, errors for spaces that do not fit."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401
from agents.features import TileCoding, UnitCoordinates, make_features, polynomial_exponents, tile_offsets
from rl.errors import UserError

UNIT_SQUARE = gym.spaces.Box(low=np.zeros(2), high=np.ones(2), dtype=np.float64)


def grid_world() -> gym.Env:
    return gym.make("GridWorld-v0")


def test_one_hot_is_the_unit_vector_of_the_state():
    env = grid_world()
    features = make_features("one_hot", env.observation_space, env)
    x = features(7)
    assert features.n_features == 25
    np.testing.assert_array_equal(x.dense(25), np.eye(25)[7])


def test_polynomial_terms_of_a_2d_point():
    box = gym.spaces.Box(low=-np.ones(2), high=np.ones(2), dtype=np.float64)
    features = make_features("polynomial", box, order=2)
    # Terms 1, x, y, x^2, xy, y^2 at (x, y) = (0.5, -0.2), a point already in [-1, 1]^2.
    np.testing.assert_allclose(features(np.array([0.5, -0.2])).values, [1.0, 0.5, -0.2, 0.25, -0.1, 0.04])
    # Total degree <= order: C(order + d, d) terms, e.g. 10 for order 3 in 2-D.
    assert len(polynomial_exponents(2, 3)) == 10 and len(polynomial_exponents(3, 2)) == 10


def test_grid_world_states_become_scaled_row_and_column():
    env = grid_world()
    # State 7 is cell (row 2, col 3): (1/4, 2/4) in [0, 1]^2, (-0.5, 0) in [-1, 1]^2.
    polynomial = make_features("polynomial", env.observation_space, env, order=2)
    np.testing.assert_allclose(polynomial(7).values, [1.0, -0.5, 0.0, 0.25, 0.0, 0.0], atol=1e-12)
    fourier = make_features("fourier", env.observation_space, env, order=1)
    # c = (0,0), (0,1), (1,0), (1,1): cos(0), cos(pi/2), cos(pi/4), cos(3 pi/4).
    half = np.sqrt(0.5)
    np.testing.assert_allclose(fourier(7).values, [1.0, 0.0, half, -half], atol=1e-12)
    assert fourier.n_features == 4 and make_features("fourier", env.observation_space, env, order=3).n_features == 16


def test_a_discrete_space_without_a_grid_is_one_axis():
    fourier = make_features("fourier", gym.spaces.Discrete(5), order=2)
    # State 2 of 5 lies at 0.5: cos(0), cos(pi/2), cos(pi).
    np.testing.assert_allclose(fourier(2).values, [1.0, 0.0, -1.0], atol=1e-12)
    # Discrete(5, start=1) holds states 1..5: state 3 is the middle one, and 5 the last.
    shifted = make_features("fourier", gym.spaces.Discrete(5, start=1), order=2)
    np.testing.assert_allclose(shifted(3).values, [1.0, 0.0, -1.0], atol=1e-12)
    np.testing.assert_allclose(shifted(5).values, [1.0, -1.0, 1.0], atol=1e-12)


def test_tile_offsets_are_the_asymmetric_displacements():
    # Tiling i moves (i * (1, 3) mod 4) / 4 tile widths.
    np.testing.assert_allclose(tile_offsets(4, 2), [[0, 0], [0.25, 0.75], [0.5, 0.5], [0.75, 0.25]])


def test_tile_indices_of_a_point_by_hand():
    tiles = TileCoding(UnitCoordinates(np.zeros(2), np.ones(2)), tilings=4, tiles_per_dim=2)
    assert tiles.n_features == 4 * 3 * 3  # 3 x 3 tiles per tiling: one extra per dimension for the shift
    # (0.3, 0.6) is (0.6, 1.2) in tile widths; adding each tiling's offset and flooring gives its tile:
    # tiling 0 (0, 1) -> 1; tiling 1 (0.85, 1.95) -> (0, 1) -> 9 + 1; tiling 2 (1.1, 1.7) -> (1, 1) -> 18 + 4;
    # tiling 3 (1.35, 1.45) -> (1, 1) -> 27 + 4.
    x = tiles(np.array([0.3, 0.6]))
    np.testing.assert_array_equal(x.indices, [1, 10, 22, 31])
    np.testing.assert_array_equal(x.values, np.ones(4))
    built = make_features("tile", UNIT_SQUARE, tilings=4, tiles_per_dim=2)
    np.testing.assert_array_equal(built(np.array([0.3, 0.6])).indices, x.indices)


def test_tile_coding_is_sparse_and_generalises_locally():
    env = gym.make("MountainCar-v0")
    tiles = make_features("tile", env.observation_space, env, tilings=8, tiles_per_dim=8)
    env.observation_space.seed(0)
    corners = [env.observation_space.low, env.observation_space.high]
    for obs in [*corners, *(env.observation_space.sample() for _ in range(50))]:
        x = tiles(obs)
        assert len(x.indices) == 8 == len(np.unique(x.indices))  # one active tile per tiling
        assert 0 <= x.indices.min() and x.indices.max() < tiles.n_features
    obs = np.array([-0.5, 0.0])
    near, far = obs + np.array([0.01, 0.0]), obs + np.array([0.9, 0.0])
    assert len(np.intersect1d(tiles(obs).indices, tiles(near).indices)) >= 6
    assert len(np.intersect1d(tiles(obs).indices, tiles(far).indices)) == 0
    # Outside the bounds an observation is clipped: it shares the edge tiles.
    np.testing.assert_array_equal(tiles(np.array([5.0, 1.0])).indices, tiles(env.observation_space.high).indices)


def test_settings_that_cannot_fit_the_space_are_user_errors():
    cartpole = gym.make("CartPole-v1")
    with pytest.raises(UserError, match="one_hot features need a Discrete observation space"):
        make_features("one_hot", cartpole.observation_space, cartpole)
    with pytest.raises(UserError, match=r"dimensions \[1, 3\] .* unbounded; pass bounds="):
        make_features("polynomial", cartpole.observation_space, cartpole)
    with pytest.raises(UserError, match="unbounded; pass bounds="):
        make_features("tile", cartpole.observation_space, cartpole)
    with pytest.raises(UserError, match="one finite \\[low, high\\] pair"):
        make_features("tile", cartpole.observation_space, cartpole, bounds=[[-1, 1], [-1, 1]])
    with pytest.raises(UserError, match="194,481 features, over the cap"):
        make_features("fourier", cartpole.observation_space, cartpole, order=20, bounds=[[-1, 1]] * 4)
    with pytest.raises(UserError, match="unknown features 'rbf'"):
        make_features("rbf", cartpole.observation_space, cartpole)
    bounded = make_features(
        "tile", cartpole.observation_space, cartpole, bounds=[[-2.4, 2.4], [-3, 3], [-0.2, 0.2], [-3, 3]]
    )
    assert bounded.n_features == 8 * 9**4
