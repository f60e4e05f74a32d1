"""The static-cache, continuously refilled sampler against `sampling.generate`: the same greedy tokens and the same
seeded samples (per-prompt generators) with fewer rows than prompts, stop tokens ending rows at different steps, the
log-probs of a fresh forward pass; and on CUDA, the captured decode graph against eager decoding."""

from __future__ import annotations

import pytest
import torch
from test_sampling import tiny_model  # the same seeded random model (vocabulary 40)

from llm_rl.fast_sampling import StaticCache, decode_step, generate_continuous
from llm_rl.model import Transformer
from llm_rl.sampling import SamplingConfig, generate, left_pad, sequence_log_probs

PROMPTS = [[5, 9, 11, 3, 7, 21, 8], [30], [14, 4, 4, 19], [6, 6, 12], [1, 2, 3, 4, 5, 6, 7, 8, 9], [22, 17], [3]]

pytestmark = pytest.mark.usefixtures("one_thread")


def reference(model: Transformer, cfg: SamplingConfig, seeds: list[int] | None):
    """`sampling.generate` on all prompts in one left-padded batch (per-row generators when seeds are given)."""
    ids, mask = left_pad(PROMPTS, pad_token_id=0, device=model.device)
    generators = [torch.Generator().manual_seed(s) for s in seeds] if seeds else torch.Generator()
    return generate(model, ids, mask, cfg, generators)


@pytest.mark.parametrize("batch_size", [1, 3, 7])
def test_greedy_tokens_equal_the_plain_sampler(batch_size):
    model = tiny_model()
    free = reference(model, SamplingConfig(10, temperature=0.0), None)
    stop = int(free.token_ids[0, 3])  # a token some rows produce: they end early, at different steps
    cfg = SamplingConfig(10, temperature=0.0, stop_token_ids=(stop,))
    expected = reference(model, cfg, None)
    out = generate_continuous(model, PROMPTS, cfg, torch.Generator(), batch_size=batch_size)
    assert "stop" in out.finish_reasons and "length" in out.finish_reasons
    assert out.finish_reasons == expected.finish_reasons
    width = out.mask.shape[1]
    assert torch.equal(out.mask, expected.mask[:, :width]) and not expected.mask[:, width:].any()
    assert torch.equal(out.token_ids[out.mask], expected.token_ids[:, :width][expected.mask[:, :width]])
    torch.testing.assert_close(out.policy_log_probs, expected.policy_log_probs[:, :width], atol=1e-5, rtol=0)


def test_seeded_samples_equal_the_plain_sampler_with_per_prompt_generators():
    model = tiny_model()
    seeds = [10 + i for i in range(len(PROMPTS))]
    cfg = SamplingConfig(8, temperature=0.8, top_k=10, top_p=0.95, stop_token_ids=(3,))
    expected = reference(model, cfg, seeds)
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    out = generate_continuous(model, PROMPTS, cfg, generators, batch_size=2)
    width = out.mask.shape[1]
    assert torch.equal(out.mask, expected.mask[:, :width])
    assert torch.equal(out.token_ids[out.mask], expected.token_ids[:, :width][expected.mask[:, :width]])
    torch.testing.assert_close(out.log_probs, expected.log_probs[:, :width], atol=5e-5, rtol=0)  # 1 / temperature
    # and the recorded log pi against one full forward pass per prompt
    for row, prompt in enumerate(PROMPTS):
        completion = out.token_ids[row, out.mask[row]].tolist()
        ids = torch.tensor([prompt + completion])
        scored = torch.tensor([[False] * len(prompt) + [True] * len(completion)])
        log_pi = sequence_log_probs(model, ids, torch.ones_like(scored), scored)[0, len(prompt) :]
        torch.testing.assert_close(out.policy_log_probs[row, : len(completion)], log_pi, atol=1e-5, rtol=0)


def test_bad_arguments_are_refused():
    model = tiny_model()
    with pytest.raises(ValueError, match="at least one token"):
        generate_continuous(model, [[1], []], SamplingConfig(2), torch.Generator())
    with pytest.raises(ValueError, match="2 per-prompt generators for 3 prompts"):
        generate_continuous(model, [[1], [2], [3]], SamplingConfig(2), [torch.Generator()] * 2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_graph_decoding_matches_eager_and_the_plain_sampler(dtype):
    model = tiny_model("cuda").to(dtype)
    cfg = SamplingConfig(10, temperature=0.0, stop_token_ids=(3,))
    graphed = generate_continuous(model, PROMPTS, cfg, torch.Generator(), batch_size=3, cuda_graph=True)
    eager = generate_continuous(model, PROMPTS, cfg, torch.Generator(), batch_size=3, cuda_graph=False)
    assert torch.equal(graphed.token_ids, eager.token_ids) and torch.equal(graphed.mask, eager.mask)
    torch.testing.assert_close(graphed.policy_log_probs, eager.policy_log_probs)
    if dtype == torch.float32:
        expected = reference(model, cfg, None)
        width = graphed.mask.shape[1]
        assert torch.equal(graphed.token_ids[graphed.mask], expected.token_ids[:, :width][expected.mask[:, :width]])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_static_cache_decode_step_on_cuda_writes_each_rows_own_slot():
    model = tiny_model("cuda")
    cache = StaticCache.allocate(model, 2, 4)
    cache.fill[1] = 2  # row 1 writes its token two slots further on
    decode_step(model, torch.tensor([5, 6], device="cuda"), cache)
    assert cache.mask.tolist() == [[True, False, False, False], [False, False, True, False]]
    assert cache.fill.tolist() == [1, 3] and cache.positions.tolist() == [1, 1]
