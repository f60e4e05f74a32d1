"""Partial rollouts: a response continued over iterations (in batches with other rows) equals one uninterrupted
generation with the same seed; per-row generators make a row's draws independent of the batch; segments, the total
cap, the loss mask and the repetition cut-off by hand."""

from __future__ import annotations

import pytest
import torch

from llm_rl.model import ModelConfig, Transformer
from llm_rl.partial_rollouts import (
    PartialRollout,
    PartialRolloutConfig,
    RolloutGroup,
    UnfinishedGroups,
    advance_groups,
    continue_rollouts,
    extend,
    first_repetition,
    new_rollouts,
    repetition_penalties,
    repetition_period,
    rollout_batch,
    segment_loss_mask,
    split_finished,
)
from llm_rl.sampling import Completions, SamplingConfig, generate, left_pad
from llm_rl.tasks import Problem
from rl.checkpoint import flatten_state, load_checkpoint, save_checkpoint, unflatten_state

VOCAB = 40
PROMPTS = [[5, 9, 11, 3, 7, 21, 8], [30, 2], [14, 4, 4, 19], [1, 2, 3]]
STOP = 36  # a token the random model draws now and then, so some rows stop mid-segment


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model() -> Transformer:
    """Random weights, scaled so the next-token distributions are neither flat nor one-hot."""
    model = Transformer(ModelConfig(vocab_size=VOCAB, attention_bias=True))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
    return model.eval()


def test_per_row_generators_make_a_row_independent_of_its_batch():
    model, sampling = tiny_model(), SamplingConfig(max_new_tokens=10, temperature=1.0)
    ids, mask = left_pad(PROMPTS, 0)
    together = generate(model, ids, mask, sampling, [torch.Generator().manual_seed(100 + i) for i in range(4)])
    for i, prompt in enumerate(PROMPTS):
        alone_ids, alone_mask = left_pad([prompt], 0)
        alone = generate(model, alone_ids, alone_mask, sampling, [torch.Generator().manual_seed(100 + i)])
        assert alone.token_ids[0].tolist() == together.token_ids[i].tolist()
    with pytest.raises(ValueError, match="per-row generators"):
        generate(model, ids, mask, sampling, [torch.Generator()])


def run_iterations(model, cfg, sampling, seed: int, late_prompt: list[int] | None = None) -> list[PartialRollout]:
    """Iterations until every rollout finishes; `late_prompt` joins at iteration 1 (from a separate generator)."""
    rollouts = new_rollouts(PROMPTS, torch.Generator().manual_seed(seed))
    iteration = 0
    while not all(r.finished for r in rollouts):
        if iteration == 1 and late_prompt is not None:
            rollouts += new_rollouts([late_prompt], torch.Generator().manual_seed(seed + 1))
        continue_rollouts(model, rollouts, sampling, cfg, iteration)
        iteration += 1
        assert iteration < 50
    return rollouts


def test_continued_rollouts_equal_uninterrupted_ones():
    model = tiny_model()
    sampling = SamplingConfig(temperature=1.0, stop_token_ids=(STOP,))
    common = dict(max_tokens=14, max_ngram=2, min_repeats=3, min_repeat_tokens=0)
    whole = run_iterations(model, PartialRolloutConfig(segment_tokens=14, **common), sampling, seed=3)
    late = new_rollouts([[6, 6, 2]], torch.Generator().manual_seed(4))
    continue_rollouts(model, late, sampling, PartialRolloutConfig(segment_tokens=14, **common), 0)
    pieces = run_iterations(model, PartialRolloutConfig(segment_tokens=3, **common), sampling, 3, [6, 6, 2])
    assert len(pieces) == len(whole) + 1
    for one, other in zip(whole + late, pieces, strict=True):
        assert one.token_ids == other.token_ids
        assert one.finish_reason == other.finish_reason
        torch.testing.assert_close(torch.tensor(one.log_probs), torch.tensor(other.log_probs), atol=1e-4, rtol=0)
    assert all(set(r.segments) == {0} for r in whole)
    # the pieces really were split: segment k holds tokens 3k..3k+2 (the late row starts at iteration 1)
    long = [r for r in pieces[: len(PROMPTS)] if len(r.token_ids) > 3]
    assert long, "no response outlived its first segment; the test would not test continuation"
    for r in long:
        assert r.segments == [t // 3 for t in range(len(r.token_ids))]
    assert {r.finish_reason for r in pieces} == {"stop", "length"}  # rows ended at different iterations


def scripted(tokens: list[int], reason: str) -> Completions:
    """One row of completions, as `generate` would return it."""
    ids = torch.tensor([tokens])
    return Completions(ids, torch.ones_like(ids, dtype=torch.bool), -torch.ones(1, len(tokens)),
                       -2 * torch.ones(1, len(tokens)), [reason])  # fmt: skip


def test_extend_records_segments_caps_the_length_and_stops_at_a_stop_token():
    cfg = PartialRolloutConfig(segment_tokens=4, max_tokens=6, max_ngram=0)
    rollout = PartialRollout([1], torch.Generator())
    extend(rollout, scripted([10, 11, 12, 13], "length"), 0, iteration=0, cfg=cfg)
    assert rollout.token_ids == [10, 11, 12, 13] and rollout.segments == [0] * 4 and not rollout.finished
    extend(rollout, scripted([14, 15, 16, 17], "length"), 0, iteration=1, cfg=cfg)  # only 2 fit under max_tokens
    assert rollout.token_ids == [10, 11, 12, 13, 14, 15] and rollout.segments == [0, 0, 0, 0, 1, 1]
    assert rollout.finish_reason == "length" and rollout.log_probs == [-1.0] * 6 and rollout.policy_log_probs[-1] == -2
    stopping = PartialRollout([1], torch.Generator())
    extend(stopping, scripted([10, STOP], "stop"), 0, iteration=0, cfg=cfg)
    assert stopping.finish_reason == "stop" and stopping.token_ids == [10, STOP]
    # a stop token beyond the cap does not count: the response was cut by the cap
    late_stop = PartialRollout([1], torch.Generator(), token_ids=[1] * 5, log_probs=[0.0] * 5,
                               policy_log_probs=[0.0] * 5, segments=[0] * 5)  # fmt: skip
    extend(late_stop, scripted([10, STOP], "stop"), 0, iteration=1, cfg=cfg)
    assert late_stop.finish_reason == "length" and late_stop.token_ids == [1] * 5 + [10]


def test_repetition_period_by_hand():
    assert repetition_period([9, 1, 2, 3, 1, 2, 3, 1, 2, 3], 3, 3, 0) == 3
    assert repetition_period([9, 1, 2, 3, 1, 2, 3, 1, 2, 3], 2, 3, 0) == 0  # the unit is longer than max_ngram
    assert repetition_period([9, 1, 2, 3, 1, 2, 3, 1, 2, 3], 3, 4, 0) == 0  # only three repeats
    assert repetition_period([5, 5, 5, 5], 4, 4, 0) == 1
    assert repetition_period([5, 5, 5, 5], 4, 4, 6) == 0  # "5555" is too short a span to be a loop
    assert repetition_period([5] * 6, 4, 4, 6) == 1
    assert repetition_period([1, 2, 1, 2, 1], 2, 2, 0) == 2  # the tail 2 1 2 1
    assert repetition_period([1, 2, 3, 4], 4, 2, 0) == 0


def test_first_repetition_cuts_where_the_loop_completes_and_marks_a_penalty():
    cfg = PartialRolloutConfig(max_ngram=2, min_repeats=3, min_repeat_tokens=0, repetition_penalty=-0.5)
    tokens = [7, 1, 2, 1, 2, 1, 2, 9]
    assert first_repetition(tokens, 0, cfg) == 7  # [7 1 2 1 2 1 2]: (1 2) three times
    assert first_repetition(tokens, 7, cfg) is None  # only lengths after `start` are checked
    assert first_repetition(tokens, 0, PartialRolloutConfig(max_ngram=0)) is None
    looping = PartialRollout([1], torch.Generator(), token_ids=[7, 1, 2], log_probs=[0.0] * 3,
                             policy_log_probs=[0.0] * 3, segments=[0] * 3)  # fmt: skip
    extend(looping, scripted([1, 2, 1, 2, 9], "length"), 0, iteration=1, cfg=cfg)
    assert looping.token_ids == [7, 1, 2, 1, 2, 1, 2] and looping.segments == [0, 0, 0, 1, 1, 1, 1]
    assert looping.finish_reason == "repetition" and len(looping.log_probs) == 7
    fine = PartialRollout([1], torch.Generator(), finish_reason="stop")
    assert repetition_penalties([looping, fine], cfg) == [-0.5, 0.0]
    assert split_finished([looping, PartialRollout([1], torch.Generator()), fine])[0] == [looping, fine]


def test_segment_loss_mask_and_rollout_batch():
    # row 0 finished in iteration 2 after segments 0, 1, 2; row 1 finished in iteration 1 (then waited for its group)
    segments = torch.tensor([[0, 0, 1, 2, 2], [0, 1, 1, -1, -1], [2, -1, -1, -1, -1]])
    mask = segments >= 0
    expected = torch.tensor(
        [[False, False, False, True, True], [False, True, True, False, False], [True, False, False, False, False]]
    )
    assert torch.equal(segment_loss_mask(segments, mask, True), expected)
    assert torch.equal(segment_loss_mask(segments, mask, False), mask)
    a = PartialRollout([1, 2, 3], torch.Generator(), None, [4, 5, 6, 7], [-0.1, -0.2, -0.3, -0.4], [-1.0] * 4,
                       [0, 0, 1, 1], "stop")  # fmt: skip
    b = PartialRollout([8], torch.Generator(), None, [9, 10], [-0.5, -0.6], [-2.0] * 2, [1, 1], "repetition")
    batch = rollout_batch([a, b], PartialRolloutConfig(exclude_earlier_segments=True), pad_token_id=0)
    assert batch.prompt_ids.tolist() == [[1, 2, 3], [0, 0, 8]]
    assert batch.completions.token_ids.tolist() == [[4, 5, 6, 7], [9, 10, 0, 0]]
    assert batch.segments.tolist() == [[0, 0, 1, 1], [1, 1, -1, -1]]
    assert batch.loss_mask.tolist() == [[False, False, True, True], [True, True, False, False]]
    torch.testing.assert_close(batch.completions.log_probs[1], torch.tensor([-0.5, -0.6, 0.0, 0.0]))
    assert batch.completions.finish_reasons == ["stop", "repetition"]


def test_unfinished_groups_round_trip_through_a_checkpoint_and_continue_the_same(tmp_path):
    model = tiny_model()
    sampling = SamplingConfig(temperature=1.0, stop_token_ids=(STOP,))
    cfg = PartialRolloutConfig(segment_tokens=3, max_tokens=14, max_ngram=0)
    problem = Problem("Q: 1+2=", "3", "1+2=3 c0\nAnswer: 3", 1, "addition", "addition-1-x")
    rollouts = new_rollouts(PROMPTS, torch.Generator().manual_seed(5), [problem, None, problem, None])
    unfinished = UnfinishedGroups()
    finished = advance_groups(model, unfinished, [RolloutGroup(7, rollouts[:2]), RolloutGroup(3, rollouts[2:])],
                              sampling, cfg, iteration=0)  # fmt: skip
    assert not finished and len(unfinished.groups) == 2
    arrays: dict = {}
    save_checkpoint(tmp_path, arrays, {"unfinished": flatten_state(unfinished.state_dict(), "unfinished", arrays)})
    loaded_arrays, meta = load_checkpoint(tmp_path)
    restored = UnfinishedGroups()
    restored.load_state_dict(unflatten_state(meta["unfinished"], loaded_arrays))
    for saved, loaded in zip(unfinished.groups, restored.groups, strict=True):
        assert saved.index == loaded.index
        for one, other in zip(saved.rollouts, loaded.rollouts, strict=True):
            assert one.prompt_ids == other.prompt_ids and one.token_ids == other.token_ids
            assert one.log_probs == other.log_probs and one.policy_log_probs == other.policy_log_probs
            assert one.segments == other.segments and one.finish_reason == other.finish_reason
            assert one.problem == other.problem
            assert torch.equal(one.generator.get_state(), other.generator.get_state())
    originals, copies = ([r for g in groups.groups for r in g.rollouts] for groups in (unfinished, restored))
    for iteration in range(1, 5):  # the restored groups go on exactly as the originals do
        advance_groups(model, unfinished, [], sampling, cfg, iteration)
        advance_groups(model, restored, [], sampling, cfg, iteration)
    assert [r.token_ids for r in originals] == [r.token_ids for r in copies]
    assert max(len(r.token_ids) for r in copies) > 3  # they did go on
