"""Compact observation storage (`rl.frame_store`, `ReplayBuffer(compact_observations=True)`): the same batches as
plain storage from every kind of stream, each frame kept once, stored rows that never lose their frames, and state
round trips through checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rl.checkpoint import load_checkpoint, save_checkpoint
from rl.replay_buffer import ReplayBuffer
from tests.rl.test_replay_buffer import assert_same_batch

FAST = settings(max_examples=60, deadline=None)


def play(
    buffers: list[ReplayBuffer],
    rng: np.random.Generator,
    steps: int,
    end_p: float,
    jump_p: float = 0.0,
    stack: int | None = None,
    odd_p: float = 0.0,
) -> int:
    """Feeds every buffer the same vector-env stream of uint8 observations: each env's next step starts from its last
    next observation, or from a fresh reset observation after an episode end (or, with probability `jump_p`, from an
    unrelated one, as a direct caller might add). Observations are (2,), or with `stack` (stack, 2) frame stacks whose
    next observation drops the oldest frame and adds a new one, except (probability `odd_p`) a whole new stack.
    Returns the number of episode starts."""
    num_envs = buffers[0].num_envs
    shape = (2,) if stack is None else (stack, 2)

    def draw(count: int) -> np.ndarray:
        return rng.integers(0, 256, (count, *shape), dtype=np.uint8)

    obs, starts = draw(num_envs), num_envs
    for _ in range(steps):
        next_obs = draw(num_envs)
        if stack is not None:
            next_obs = np.concatenate([obs[:, 1:], next_obs[:, :1]], axis=1)
            odd = rng.random(num_envs) < odd_p
            next_obs[odd] = draw(int(odd.sum()))
        terminated, truncated = rng.random(num_envs) < end_p, rng.random(num_envs) < end_p
        actions, rewards = rng.integers(0, 3, num_envs), rng.normal(size=num_envs)
        for buffer in buffers:
            buffer.add(obs, actions, rewards, next_obs, terminated, truncated)
        ended = terminated | truncated
        starts += int(ended.sum())
        obs = np.where(ended.reshape(-1, *[1] * len(shape)), draw(num_envs), next_obs)
        jumped = rng.random(num_envs) < jump_p
        obs[jumped] = draw(int(jumped.sum()))
    return starts


STREAMS = dict(
    capacity=st.integers(1, 30),
    num_envs=st.integers(1, 3),
    n_step=st.integers(1, 3),
    prioritized=st.booleans(),
    steps=st.integers(1, 60),
    end_p=st.sampled_from([0.0, 0.1, 0.5]),
    jump_p=st.sampled_from([0.0, 0.2]),
    seed=st.integers(0, 2**16),
)
"""Buffers and streams to compare compact storage on."""


@FAST
@given(**STREAMS)
def test_compact_storage_samples_what_plain_storage_samples(
    capacity: int, num_envs: int, n_step: int, prioritized: bool, steps: int, end_p: float, jump_p: float, seed: int
) -> None:
    kwargs = dict(obs_dtype=np.uint8, num_envs=num_envs, n_step=n_step, gamma=0.9, prioritized=prioritized)
    plain = ReplayBuffer(capacity, (2,), **kwargs)
    compact = ReplayBuffer(capacity, (2,), **kwargs, compact_observations=True)
    play([plain, compact], np.random.default_rng(seed), steps, end_p, jump_p)
    assert_same_samples(plain, compact)


def assert_same_samples(plain: ReplayBuffer, compact: ReplayBuffer) -> None:
    """Three seeded batches of each buffer agree, with (prioritized buffers) the same priority updates between."""
    assert len(plain) == len(compact)
    if len(plain):
        for draw in range(3):
            a, b = plain.sample(40, np.random.default_rng(draw)), compact.sample(40, np.random.default_rng(draw))
            assert_same_batch(a, b)
            if plain.prioritized:
                for buffer in (plain, compact):
                    buffer.update_priorities(a.indices, np.abs(a.rewards.numpy()))


def test_each_frame_is_kept_once() -> None:
    plain = ReplayBuffer(1_000, (2,), obs_dtype=np.uint8, num_envs=4)
    compact = ReplayBuffer(1_000, (2,), obs_dtype=np.uint8, num_envs=4, compact_observations=True)
    starts = play([plain, compact], np.random.default_rng(0), 250, end_p=0.01)
    frames = compact._frames
    # One frame per step and env in the ring, and one more per episode start beside it, not two per step.
    assert frames.ring_written == 1_000 and frames.side_written == starts < 40
    plain_bytes = sum(a.nbytes for k, a in plain.state_dict()[0].items() if k.startswith("storage.") and "obs" in k)
    compact_bytes = sum(a.nbytes for k, a in compact.state_dict()[0].items() if k.startswith("frames."))
    assert plain_bytes == 2 * 1_000 * 2 and compact_bytes == (1_000 + starts) * 2


def ids(buffer: ReplayBuffer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every stored row's obs and next_obs (env, step) ids and its step count k (discount gamma^k, gamma 0.5)."""
    rows = buffer._storage
    size = len(buffer)
    obs, next_obs = buffer._frames.gather(rows["obs"][:size]), buffer._frames.gather(rows["next_obs"][:size])
    return obs, next_obs, np.rint(-np.log2(rows["discounts"][:size])).astype(int)


PLANS = dict(
    capacity=st.integers(1, 40),
    num_envs=st.integers(1, 3),
    n_step=st.integers(1, 4),
    plan=st.lists(st.tuples(st.integers(1, 12), st.booleans()), min_size=1, max_size=12),
    seed=st.integers(0, 2**16),
)
"""Buffers and plans of (steps, then a mid-episode reset or not) to check frame lifetimes on."""


@FAST
@given(**PLANS)
def test_stored_rows_never_lose_their_frames(capacity: int, num_envs: int, n_step: int, plan: list, seed: int) -> None:
    check_frames(capacity, num_envs, n_step, plan, seed, end_p=0.15)


def test_frames_outlive_rows_across_many_mid_episode_resets() -> None:
    # Every reset ends open n-step windows: a buffer that dropped them would overwrite frames its rows still use.
    check_frames(12, 1, 3, [(3, True)] * 15, seed=0, end_p=0.0)
    check_frames(12, 2, 3, [(3, True)] * 15, seed=0, end_p=0.0)
    check_frames(8, 1, 4, [(5, True)] * 15, seed=0, end_p=0.0)


def check_frames(capacity: int, num_envs: int, n_step: int, plan: list, seed: int, end_p: float) -> None:
    """Observations are (env, step) ids; after any mix of episode ends, wrap-around and mid-episode resets
    (`discard_pending`), every stored row still reads its own frames: next_obs is k steps after obs."""
    buffer = ReplayBuffer(capacity, (2,), obs_dtype=np.int64, num_envs=num_envs, n_step=n_step, gamma=0.5,
                          compact_observations=True)  # fmt: skip
    rng, envs, t = np.random.default_rng(seed), np.arange(num_envs), np.zeros(num_envs, dtype=np.int64)
    for steps, reset in plan:
        for _ in range(steps):
            ended = rng.random(num_envs) < end_p
            obs, next_obs = np.stack([envs, t], 1), np.stack([envs, t + 1], 1)
            buffer.add(obs, envs, np.zeros(num_envs), next_obs, np.zeros(num_envs, bool), ended)
            t += 1 + ended  # after an end the next observation is a new id, never the final one
        if reset:
            buffer.discard_pending()
            t += 1
        obs, next_obs, k = ids(buffer)
        np.testing.assert_array_equal(obs[:, 0], next_obs[:, 0])
        assert (k >= 1).all() and (k <= n_step).all()
        np.testing.assert_array_equal(next_obs[:, 1] - obs[:, 1], k)


def test_discard_pending_stores_the_windows_as_truncated() -> None:
    buffer = ReplayBuffer(10, (1,), obs_dtype=np.int64, n_step=3, gamma=0.5, compact_observations=True)
    no = np.zeros(1, dtype=bool)
    for t in range(2):
        buffer.add([[t]], [0], [1.0 + t], [[t + 1]], no, no)
    assert len(buffer) == 0  # a 3-step window is still open
    buffer.discard_pending()
    batch = buffer.sample(20, np.random.default_rng(0))
    columns = zip(batch.obs[:, 0], batch.rewards, batch.next_obs[:, 0], batch.terminated, batch.discounts, strict=True)
    by_obs = {int(o): (float(r), int(n), float(term), float(d)) for o, r, n, term, d in columns}
    # Bootstrapping from the latest next observation, 2 steps and 1 step on, as a truncated episode would.
    assert by_obs == {0: (1.0 + 0.5 * 2.0, 2, 0.0, 0.25), 1: (2.0, 2, 0.0, 0.5)}


def filled(seed: int) -> ReplayBuffer:
    buffer = ReplayBuffer(12, (2,), obs_dtype=np.uint8, num_envs=2, n_step=2, prioritized=True,
                          compact_observations=True)  # fmt: skip
    play([buffer], np.random.default_rng(seed), 20 + seed, end_p=0.2)
    return buffer


def test_state_round_trip_through_a_checkpoint(tmp_path) -> None:
    original = filled(0)
    save_checkpoint(tmp_path, *original.state_dict())
    restored = filled(1)
    restored.load_state_dict(*load_checkpoint(tmp_path))
    assert_same_batch(original.sample(32, np.random.default_rng(5)), restored.sample(32, np.random.default_rng(5)))
    for buffer in (original, restored):
        play([buffer], np.random.default_rng(9), 7, end_p=0.2)
    assert_same_batch(original.sample(32, np.random.default_rng(6)), restored.sample(32, np.random.default_rng(6)))


def test_saved_states_that_do_not_fit_are_value_errors() -> None:
    arrays, meta = filled(0).state_dict()
    plain = ReplayBuffer(12, (2,), obs_dtype=np.uint8, num_envs=2, n_step=2, prioritized=True)
    with pytest.raises(ValueError, match="compact_observations None != True"):
        filled(0).load_state_dict(*plain.state_dict())
    with pytest.raises(ValueError, match="compact_observations True != None"):
        plain.load_state_dict(arrays, meta)
    with pytest.raises(ValueError, match="'frames.side'"):
        filled(0).load_state_dict({k: v for k, v in arrays.items() if k != "frames.side"}, meta)
    broken = {**arrays, "storage.next_obs": arrays["storage.next_obs"] + 1_000}
    with pytest.raises(ValueError, match="references point outside"):
        filled(1).load_state_dict(broken, meta)


# ---- frame stacks: observations of K frames along their first axis, each step moving on by one frame ----

K = 3


@FAST
@given(**STREAMS, odd_p=st.sampled_from([0.0, 0.3, 1.0]))
def test_frame_stacks_sample_what_plain_storage_samples(
    capacity, num_envs, n_step, prioritized, steps, end_p, jump_p, odd_p, seed
) -> None:
    kwargs = dict(obs_dtype=np.uint8, num_envs=num_envs, n_step=n_step, gamma=0.9, prioritized=prioritized)
    plain = ReplayBuffer(capacity, (K, 2), **kwargs)
    stacked = ReplayBuffer(capacity, (K, 2), **kwargs, compact_observations=True, frame_stack=K)
    play([plain, stacked], np.random.default_rng(seed), steps, end_p, jump_p, K, odd_p)
    assert_same_samples(plain, stacked)


def test_each_frame_of_a_stack_is_kept_once() -> None:
    stacked = ReplayBuffer(1_000, (K, 2), obs_dtype=np.uint8, num_envs=4, compact_observations=True, frame_stack=K)
    starts = play([stacked], np.random.default_rng(0), 250, end_p=0.01, stack=K)
    frames = stacked._frames
    # One new frame per step and env in the ring, and a whole stack per episode start beside it.
    assert frames.ring_written == 1_000 and frames.side_written == K * starts < K * 40
    frame_bytes = sum(a.nbytes for k, a in stacked.state_dict()[0].items() if k.startswith("frames."))
    assert frame_bytes == (1_000 + K * starts) * 2  # plain storage: 2 * K * 1,000 frames


@FAST
@given(**PLANS)
def test_stored_stacks_never_lose_their_frames(capacity, num_envs, n_step, plan, seed) -> None:
    """Frames are (env, step) ids, an observation the stack of its last K; after any mix of episode ends,
    wrap-around and mid-episode resets every stored row still reads its own frames."""
    buffer = ReplayBuffer(capacity, (K, 2), obs_dtype=np.int64, num_envs=num_envs, n_step=n_step, gamma=0.5,
                          compact_observations=True, frame_stack=K)  # fmt: skip
    rng, envs, t = np.random.default_rng(seed), np.arange(num_envs), np.zeros(num_envs, dtype=np.int64)

    def stack(last: np.ndarray) -> np.ndarray:  # (N, K, 2): frames last - K + 1, ..., last of each env
        return np.stack([np.stack([envs, last - K + 1 + j], 1) for j in range(K)], 1)

    for steps, reset in plan:
        for _ in range(steps):
            ended = rng.random(num_envs) < 0.15
            buffer.add(stack(t), envs, np.zeros(num_envs), stack(t + 1), np.zeros(num_envs, bool), ended)
            t += 1 + K * ended  # after an end the next observation is a stack of new ids
        if reset:
            buffer.discard_pending()
            t += K
        size = len(buffer)
        obs, next_obs = (buffer._frames.gather(buffer._storage[key][:size]) for key in ("obs", "next_obs"))
        k = np.rint(-np.log2(buffer._storage["discounts"][:size])).astype(int)
        np.testing.assert_array_equal(obs[:, :, 0], next_obs[:, :, 0])  # one env's frames
        np.testing.assert_array_equal(np.diff(obs[:, :, 1], axis=1), 1)  # consecutive frames
        assert (k >= 1).all() and (k <= n_step).all()
        np.testing.assert_array_equal(next_obs[:, -1, 1] - obs[:, -1, 1], k)


def test_stacked_state_round_trip_and_older_whole_observation_checkpoints(tmp_path) -> None:
    def buffer(stack: int) -> ReplayBuffer:
        return ReplayBuffer(12, (K, 2), obs_dtype=np.uint8, num_envs=2, n_step=2, prioritized=True,
                            compact_observations=True, frame_stack=stack)  # fmt: skip

    for saved_stack in (K, 1):  # 1: a buffer of whole observations, as checkpoints before frame stacks hold
        original = buffer(saved_stack)
        play([original], np.random.default_rng(0), 25, end_p=0.2, jump_p=0.1, stack=K, odd_p=0.1)
        save_checkpoint(tmp_path, *original.state_dict())
        restored = buffer(K)
        play([restored], np.random.default_rng(1), 9, end_p=0.2, jump_p=0.1, stack=K, odd_p=0.1)
        restored.load_state_dict(*load_checkpoint(tmp_path))
        assert restored._frames.stack == saved_stack
        for seed in (5, 6):
            assert_same_batch(
                original.sample(32, np.random.default_rng(seed)), restored.sample(32, np.random.default_rng(seed))
            )
            for each in (original, restored):
                play([each], np.random.default_rng(9), 7, end_p=0.2, jump_p=0.1, stack=K, odd_p=0.1)


@pytest.mark.parametrize(("stack", "odd_p", "steps"), [(None, 0.0, 0), (K, 1.0, 12), (K, 1.0, 0)])
def test_buffers_that_never_wrote_the_ring_round_trip(tmp_path, stack, odd_p, steps) -> None:
    # Unused pending slots hold reference 0, which is a ring row: only the slots in use are checked on loading.
    def buffer() -> ReplayBuffer:
        shape = (2,) if stack is None else (K, 2)
        return ReplayBuffer(12, shape, obs_dtype=np.uint8, compact_observations=True, frame_stack=stack or 1)

    original = buffer()
    play([original], np.random.default_rng(0), steps, end_p=0.2, stack=stack, odd_p=odd_p)
    assert original._frames.ring_written == 0
    save_checkpoint(tmp_path, *original.state_dict())
    restored = buffer()
    restored.load_state_dict(*load_checkpoint(tmp_path))
    assert len(restored) == len(original)


def test_a_refused_older_checkpoint_leaves_the_buffer_as_it_was(tmp_path) -> None:
    def buffer(stack: int, gamma: float) -> ReplayBuffer:
        return ReplayBuffer(12, (K, 2), obs_dtype=np.uint8, num_envs=2, n_step=2, gamma=gamma, prioritized=True,
                            compact_observations=True, frame_stack=stack)  # fmt: skip

    older = buffer(1, gamma=0.5)
    play([older], np.random.default_rng(0), 20, end_p=0.2, stack=K)
    save_checkpoint(tmp_path, *older.state_dict())
    current, twin = buffer(K, gamma=0.9), buffer(K, gamma=0.9)
    play([current, twin], np.random.default_rng(1), 20, end_p=0.2, stack=K)
    with pytest.raises(ValueError, match="gamma"):
        current.load_state_dict(*load_checkpoint(tmp_path))
    assert current._frames.stack == K
    for buffer_now in (current, twin):
        play([buffer_now], np.random.default_rng(2), 5, end_p=0.2, stack=K)
    assert_same_samples(twin, current)
