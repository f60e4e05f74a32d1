"""The shared replay buffer: ring wrap-around, valid rows only, n-step targets against a plain reference,
prioritized sampling and importance weights by hand, state round trips through checkpoints, same seed same batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rl.checkpoint import flatten_state, load_checkpoint, save_checkpoint, unflatten_state
from rl.replay_buffer import ReplayBatch, ReplayBuffer

FAST = settings(max_examples=50, deadline=None)
ENDS = ("none", "none", "none", "terminated", "truncated", "both")


def add_numbered(buffer: ReplayBuffer, first_id: int) -> None:
    """Adds one step of N envs whose transitions are numbered first_id, first_id + 1, ... in every field."""
    ids = np.arange(first_id, first_id + buffer.num_envs)
    no = np.zeros(buffer.num_envs, dtype=bool)
    buffer.add(ids[:, None].astype(np.float32), ids, ids, ids[:, None] + 0.5, no, no)


def assert_same_batch(a: ReplayBatch, b: ReplayBatch) -> None:
    np.testing.assert_array_equal(a.indices, b.indices)
    for name in ("obs", "actions", "rewards", "next_obs", "terminated", "discounts", "weights"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.extras.keys() == b.extras.keys()
    assert all(torch.equal(a.extras[k], b.extras[k]) for k in a.extras)


@pytest.mark.parametrize(("capacity", "num_envs", "adds"), [(5, 2, 7), (7, 1, 20), (2, 3, 4), (6, 3, 2)])
def test_wrap_around_keeps_exactly_the_last_capacity_transitions(capacity: int, num_envs: int, adds: int) -> None:
    buffer = ReplayBuffer(capacity, obs_shape=(1,), num_envs=num_envs)
    for step in range(adds):
        add_numbered(buffer, step * num_envs)
    total = adds * num_envs
    assert len(buffer) == min(total, capacity)
    arrays, _ = buffer.state_dict()
    kept = np.arange(max(0, total - capacity), total)
    # Transition j is written to row j mod capacity, overwriting the oldest first.
    np.testing.assert_array_equal(arrays["storage.obs"][kept % capacity, 0], kept)
    np.testing.assert_array_equal(arrays["storage.actions"][kept % capacity], kept)
    np.testing.assert_array_equal(arrays["storage.next_obs"][kept % capacity, 0], kept + 0.5)


@FAST
@given(
    capacity=st.integers(1, 20),
    num_envs=st.integers(1, 4),
    adds=st.integers(1, 15),
    n_step=st.integers(1, 3),
    prioritized=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_samples_only_stored_rows(
    capacity: int, num_envs: int, adds: int, n_step: int, prioritized: bool, seed: int
) -> None:
    buffer = ReplayBuffer(capacity, (1,), num_envs=num_envs, n_step=n_step, prioritized=prioritized)
    rng = np.random.default_rng(seed)
    for step in range(adds):
        add_numbered(buffer, step * num_envs)
    if len(buffer) == 0:  # n-step windows still pending
        with pytest.raises(ValueError, match="empty replay buffer"):
            buffer.sample(4, rng)
        return
    batch = buffer.sample(64, rng)
    assert np.all((batch.indices >= 0) & (batch.indices < len(buffer)))
    if prioritized:  # a row of priority 0 is still sampleable (eps > 0); unwritten rows never are
        buffer.update_priorities(batch.indices, rng.integers(0, 3, size=64).astype(np.float64))
        batch = buffer.sample(64, rng)
        assert np.all((batch.indices >= 0) & (batch.indices < len(buffer)))
    stored_obs = buffer.state_dict()[0]["storage.obs"]
    np.testing.assert_array_equal(batch.obs.numpy(), stored_obs[batch.indices])


@st.composite
def episode_streams(draw: st.DrawFn) -> dict:
    """Per-env streams of rewards and episode ends (terminated, truncated, both) for a vector env of 1-3 envs."""
    num_envs, steps = draw(st.integers(1, 3)), draw(st.integers(1, 25))
    rewards = draw(st.lists(st.lists(st.integers(-5, 5), min_size=num_envs, max_size=num_envs), min_size=steps,
                            max_size=steps))  # fmt: skip
    ends = draw(st.lists(st.lists(st.sampled_from(ENDS), min_size=num_envs, max_size=num_envs), min_size=steps,
                         max_size=steps))  # fmt: skip
    return {
        "rewards": np.array(rewards, dtype=np.float64) / 4,  # (T, N), quarters: exact in float32
        "ends": ends,
        "n_step": draw(st.integers(1, 4)),
        "gamma": draw(st.sampled_from([0.0, 0.5, 0.9, 0.99, 1.0])),
    }


def n_step_reference(rewards: np.ndarray, ends: list[list[str]], n: int, gamma: float) -> dict:
    """(env, t) -> (R, next_obs, terminated, discount), straight from the definition, one step at a time."""
    steps, num_envs = rewards.shape
    expected = {}
    for env in range(num_envs):
        for t in range(steps):
            end = next((u for u in range(t, steps) if ends[u][env] != "none"), None)
            if end is None or end > t + n - 1:  # n steps inside the episode: bootstrap from s_{t+n}
                if t + n - 1 >= steps:
                    continue  # the window is still pending at the end of the stream
                k, terminated, next_obs = n, False, (env, t + n)
            else:  # the episode ends within n steps: up to its end, from its final observation
                k, terminated, next_obs = end - t + 1, ends[end][env] in ("terminated", "both"), (env, end + 0.5)
            returns = sum(gamma**i * rewards[t + i, env] for i in range(k))
            expected[(env, t)] = (returns, next_obs, terminated, gamma**k)
    return expected


@FAST
@given(episode_streams())
def test_n_step_transitions_match_a_direct_computation(stream: dict) -> None:
    rewards, ends, n, gamma = stream["rewards"], stream["ends"], stream["n_step"], stream["gamma"]
    steps, num_envs = rewards.shape
    buffer = ReplayBuffer(
        steps * num_envs, (2,), num_envs=num_envs, n_step=n, gamma=gamma, extras={"tag": ((), np.int64)}
    )
    envs = np.arange(num_envs)
    for t in range(steps):
        terminated = np.array([e in ("terminated", "both") for e in ends[t]])
        truncated = np.array([e in ("truncated", "both") for e in ends[t]])
        obs = np.stack([envs, np.full(num_envs, t)], axis=1)
        # The final observation of an ended episode differs from the next episode's first one, (env, t + 1).
        next_obs = np.stack([envs, t + np.where(terminated | truncated, 0.5, 1.0)], axis=1)
        buffer.add(obs, envs, rewards[t], next_obs, terminated, truncated, tag=10 * t + envs)
    expected = n_step_reference(rewards, ends, n, gamma)
    arrays, _ = buffer.state_dict()
    stored = {(int(o[0]), int(o[1])): row for row, o in enumerate(arrays["storage.obs"])}
    assert stored.keys() == expected.keys() and len(buffer) == len(expected)
    for (env, t), (returns, next_obs, terminated, discount) in expected.items():
        row = stored[(env, t)]
        assert arrays["storage.rewards"][row] == pytest.approx(returns, rel=1e-6, abs=1e-5)
        assert tuple(arrays["storage.next_obs"][row]) == next_obs
        assert arrays["storage.terminated"][row] == float(terminated)
        assert arrays["storage.discounts"][row] == pytest.approx(discount, rel=1e-6)
        assert arrays["storage.actions"][row] == env and arrays["storage.extras.tag"][row] == 10 * t + env


def prioritized_buffer(capacity: int = 4, beta: float = 0.5) -> ReplayBuffer:
    # eps = 1 and alpha = 1/2 turn raw priorities 0, 3, 8, 15 into stored priorities sqrt(1, 4, 9, 16) = 1, 2, 3, 4.
    buffer = ReplayBuffer(capacity, (1,), prioritized=True, alpha=0.5, beta=beta, priority_eps=1.0)
    for i in range(4):
        add_numbered(buffer, i)
    buffer.update_priorities(np.arange(4), np.array([0.0, 3.0, 8.0, 15.0]))
    return buffer


@pytest.mark.parametrize("capacity", [4, 8])
def test_importance_weights_by_hand(capacity: int) -> None:
    buffer = prioritized_buffer(capacity)
    # P = (1, 2, 3, 4) / 10 over N = 4 stored rows (the empty rows of capacity 8 do not count).
    # w_i = (N P_i)^-beta / max_j (N P_j)^-beta; beta = 1/2: (0.4 / 0.4, 0.8 / 0.4, ...)^-1/2.
    by_hand = {0.5: [1.0, 2**-0.5, 3**-0.5, 0.5], 1.0: [1.0, 1 / 2, 1 / 3, 1 / 4]}
    for beta, weights in by_hand.items():
        batch = buffer.sample(10, np.random.default_rng(0), beta=beta)
        # Stratified sampling: segment j of width 1 is [j, j+1) of the cumulative priorities 1, 3, 6, 10.
        np.testing.assert_array_equal(batch.indices, [0, 1, 1, 2, 2, 2, 3, 3, 3, 3])
        np.testing.assert_allclose(batch.weights.numpy(), np.array(weights)[batch.indices], rtol=1e-6)
    np.testing.assert_array_equal(buffer.sample(10, np.random.default_rng(0), beta=0.0).weights.numpy(), 1.0)


def test_new_transitions_get_the_largest_priority_seen() -> None:
    buffer = prioritized_buffer(capacity=8)
    add_numbered(buffer, 4)
    np.testing.assert_allclose(buffer.state_dict()[0]["priorities"], [1, 2, 3, 4, 4])


def test_prioritized_draw_frequencies() -> None:
    buffer = prioritized_buffer()
    rng, draws = np.random.default_rng(1), 40_000
    indices = np.concatenate([buffer.sample(400, rng).indices for _ in range(draws // 400)])
    expected = np.array([1, 2, 3, 4]) / 10
    standard_errors = np.sqrt(expected * (1 - expected) / draws)
    assert np.all(np.abs(np.bincount(indices, minlength=4) / draws - expected) < 4 * standard_errors)


def new_buffer() -> ReplayBuffer:
    """A prioritized 3-step buffer of 2 envs with continuous actions and an extra field."""
    extras = {"log_probs": ((), np.float32)}
    return ReplayBuffer(16, (3,), (2,), np.float32, np.float32, num_envs=2, n_step=3, prioritized=True, extras=extras)


def filled_buffer() -> ReplayBuffer:
    """Wrapped around, with updated priorities (a raised max priority) and unfinished n-step windows."""
    buffer = new_buffer()
    feed(buffer, np.random.default_rng(0), 23)
    buffer.update_priorities(np.arange(10), np.linspace(0.0, 2.0, 10))
    return buffer


def other_buffer() -> ReplayBuffer:
    """Same config, other contents: loading must replace all of them."""
    buffer = new_buffer()
    feed(buffer, np.random.default_rng(1), 3)
    return buffer


def feed(buffer: ReplayBuffer, rng: np.random.Generator, steps: int) -> None:
    for _ in range(steps):
        obs, next_obs = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
        ends = rng.random((2, 2)) < 0.1
        buffer.add(
            obs, rng.normal(size=(2, 2)), rng.normal(size=2), next_obs, ends[0], ends[1], log_probs=rng.normal(size=2)
        )


def assert_same_future(a: ReplayBuffer, b: ReplayBuffer) -> None:
    """Same next batches from equal generators, and again after the pending windows complete with more steps."""
    assert_same_batch(a.sample(32, np.random.default_rng(7)), b.sample(32, np.random.default_rng(7)))
    feed(a, np.random.default_rng(99), 5)
    feed(b, np.random.default_rng(99), 5)
    assert len(a) == len(b)
    assert_same_batch(a.sample(32, np.random.default_rng(8)), b.sample(32, np.random.default_rng(8)))


def test_state_round_trip_continues_identically() -> None:
    original = filled_buffer()
    arrays, meta = original.state_dict()
    assert meta["pending_count"] != [0, 0]  # the round trip carries unfinished n-step windows
    restored = other_buffer()  # different contents, same config
    restored.load_state_dict(arrays, meta)
    assert_same_future(original, restored)


def test_state_survives_a_safetensors_checkpoint(tmp_path) -> None:
    original = filled_buffer()
    arrays, meta = original.state_dict()
    assert all(array.dtype != object for array in arrays.values())
    save_checkpoint(tmp_path, arrays, meta)
    restored = other_buffer()
    restored.load_state_dict(*load_checkpoint(tmp_path))
    assert_same_future(original, restored)


def test_state_survives_run_track_flattening(tmp_path) -> None:
    # `Run.track` saves `flatten_state(obj.state_dict())` and restores with `obj.load_state_dict(unflattened)`.
    original, arrays = filled_buffer(), {}
    save_checkpoint(tmp_path, arrays, {"buffer": flatten_state(original.state_dict(), "buffer", arrays)})
    loaded_arrays, meta = load_checkpoint(tmp_path)
    restored = other_buffer()
    restored.load_state_dict(unflatten_state(meta["buffer"], loaded_arrays))
    assert_same_future(original, restored)


def test_loading_into_a_different_buffer_is_a_clear_value_error() -> None:
    arrays, meta = filled_buffer().state_dict()
    with pytest.raises(ValueError, match="n_step 3 != 2"):
        ReplayBuffer(16, (3,), (2,), np.float32, np.float32, num_envs=2, n_step=2).load_state_dict(arrays, meta)
    with pytest.raises(ValueError, match="'storage.obs'"):
        filled_buffer().load_state_dict({**arrays, "storage.obs": arrays["storage.obs"][:, :2]}, meta)


def test_same_seed_same_batches() -> None:
    for prioritized in (False, True):
        a, b = ReplayBuffer(50, (1,), prioritized=prioritized), ReplayBuffer(50, (1,), prioritized=prioritized)
        for i in range(30):
            add_numbered(a, i)
            add_numbered(b, i)
        rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
        for _ in range(3):
            assert_same_batch(a.sample(16, rng_a), b.sample(16, rng_b))
        assert not np.array_equal(a.sample(16, np.random.default_rng(4)).indices, b.sample(16, rng_b).indices)


def test_batch_tensors() -> None:
    buffer = ReplayBuffer(10, (4,), obs_dtype=np.uint8, num_envs=2, extras={"mask": ((3,), np.bool_)})
    no = np.zeros(2, dtype=bool)
    obs = np.zeros((2, 4), dtype=np.uint8)
    buffer.add(obs, [1, 2], [0.5, 1.5], obs, no, no, mask=np.ones((2, 3), dtype=bool))
    batch = buffer.sample(5, np.random.default_rng(0))
    assert batch.obs.shape == (5, 4) and batch.obs.dtype == torch.uint8
    assert batch.actions.shape == (5,) and batch.actions.dtype == torch.int64
    for name in ("rewards", "terminated", "discounts", "weights"):
        assert getattr(batch, name).shape == (5,) and getattr(batch, name).dtype == torch.float32
    assert batch.extras["mask"].shape == (5, 3) and batch.extras["mask"].all()
    assert batch.indices.dtype == np.int64 and torch.all(batch.discounts == torch.tensor(0.99))


def test_a_single_env_may_add_unbatched_values() -> None:
    buffer = ReplayBuffer(10, (2,))
    buffer.add(np.ones(2), 3, 1.0, np.zeros(2), False, True)
    batch = buffer.sample(1, np.random.default_rng(0))
    assert batch.obs.tolist() == [[1.0, 1.0]] and batch.actions.tolist() == [3] and batch.terminated.tolist() == [0.0]


def test_discard_pending_starts_fresh_windows() -> None:
    buffer = ReplayBuffer(10, (1,), n_step=2, gamma=0.5)
    add_numbered(buffer, 0)
    buffer.discard_pending()  # e.g. the envs were reset mid-episode
    add_numbered(buffer, 1)
    add_numbered(buffer, 2)
    arrays, _ = buffer.state_dict()
    assert len(buffer) == 1 and arrays["storage.obs"][0, 0] == 1 and arrays["storage.rewards"][0] == 1 + 0.5 * 2


def test_user_errors_name_the_problem() -> None:
    buffer = ReplayBuffer(10, (2, 3), num_envs=2)
    no = np.zeros(2, dtype=bool)
    with pytest.raises(ValueError, match=r"obs has shape \(2, 3\), expected \(2, 2, 3\)"):
        buffer.add(np.zeros((2, 3)), [0, 0], [0, 0], np.zeros((2, 2, 3)), no, no)
    with pytest.raises(ValueError, match="truncated has shape"):
        buffer.add(np.zeros((2, 2, 3)), [0, 0], [0, 0], np.zeros((2, 2, 3)), no, no[:1])
    with pytest.raises(ValueError, match="empty replay buffer"):
        buffer.sample(1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="prioritized=True"):
        buffer.update_priorities(np.array([0]), np.array([1.0]))
    with pytest.raises(ValueError, match="extras"):
        buffer.add(np.zeros((2, 2, 3)), [0, 0], [0, 0], np.zeros((2, 2, 3)), no, no, log_probs=[0, 0])
    with pytest.raises(ValueError, match="does not cast"):
        ReplayBuffer(10, (1,), obs_dtype=np.uint8).add([[0.5]], [0], [0], [[0.5]], [False], [False])
    with pytest.raises(ValueError, match="n_step"):
        ReplayBuffer(10, (1,), n_step=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batches_land_on_the_device() -> None:
    buffer = ReplayBuffer(10, (2,), device="cuda", prioritized=True, extras={"log_probs": ((), np.float32)})
    buffer.add(np.ones((1, 2)), [1], [1.0], np.ones((1, 2)), [False], [False], log_probs=[0.0])
    batch = buffer.sample(4, np.random.default_rng(0))
    assert all(t.is_cuda for t in (batch.obs, batch.actions, batch.weights, batch.extras["log_probs"]))
    buffer.update_priorities(batch.indices, torch.ones(4, device="cuda"))
