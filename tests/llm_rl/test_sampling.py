"""The sampler: temperature / top-k / top-p by hand, the CDF draw against its probabilities, greedy decoding against an
argmax loop over full recomputes of each unpadded prompt, returned log-probs against a fresh forward pass, seeded
reproducibility, stop tokens, and the same checks on CUDA."""

from __future__ import annotations

import math

import pytest
import torch

from llm_rl.model import ModelConfig, Transformer
from llm_rl.sampling import (
    SamplingConfig,
    draw_tokens,
    generate,
    left_pad,
    sampling_log_probs,
    sequence_log_probs,
)

VOCAB = 40
PROMPTS = [[5, 9, 11, 3, 7, 21, 8], [30, 2], [14, 4, 4, 19]]


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(device: str = "cpu") -> Transformer:
    """Random weights large enough that the next-token distributions are peaked (and argmax has no near-ties)."""
    model = Transformer(ModelConfig(vocab_size=VOCAB, attention_bias=True))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    return model.to(device).eval()


def full_sequence(prompt_ids, prompt_mask, completions) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prompt then completion: input_ids, attention_mask and completion_mask, each (B, P + L)."""
    ids = torch.cat([prompt_ids, completions.token_ids], dim=1)
    completion_mask = torch.cat([torch.zeros_like(prompt_mask), completions.mask], dim=1)
    return ids, torch.cat([prompt_mask, completions.mask], dim=1), completion_mask


def test_sampling_distribution_by_hand():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    q = lambda **kw: sampling_log_probs(logits, **kw).exp().flatten()  # noqa: E731
    torch.testing.assert_close(q(temperature=1.0, top_k=0, top_p=1.0), torch.tensor([0.5, 0.3, 0.15, 0.05]))
    # temperature 2 takes square roots of the probabilities before renormalising
    roots = torch.tensor([0.5, 0.3, 0.15, 0.05]).sqrt()
    torch.testing.assert_close(q(temperature=2.0, top_k=0, top_p=1.0), roots / roots.sum())
    torch.testing.assert_close(q(temperature=1.0, top_k=2, top_p=1.0), torch.tensor([0.625, 0.375, 0.0, 0.0]))
    # top_p 0.75: 0.5 is not enough, 0.5 + 0.3 is; the third token is preceded by mass 0.8 >= 0.75 and dropped
    torch.testing.assert_close(q(temperature=1.0, top_k=0, top_p=0.75), torch.tensor([0.625, 0.375, 0.0, 0.0]))
    torch.testing.assert_close(q(temperature=1.0, top_k=0, top_p=0.4), torch.tensor([1.0, 0.0, 0.0, 0.0]))
    # top-k first (3 kept: 0.5, 0.3, 0.15 over 0.95), then top-p 0.8 of the renormalised (0.526, 0.316, 0.158)
    torch.testing.assert_close(q(temperature=1.0, top_k=3, top_p=0.8), torch.tensor([0.625, 0.375, 0.0, 0.0]))


def test_draws_follow_the_probabilities():
    q = torch.tensor([0.5, 0.3, 0.2, 0.0])
    tokens = draw_tokens(q.log().expand(40_000, 4), torch.Generator().manual_seed(0))
    frequencies = torch.bincount(tokens, minlength=4) / 40_000
    # standard error of each frequency <= 0.0025; a zero-probability token is never drawn
    torch.testing.assert_close(frequencies, q, atol=0.01, rtol=0)
    assert frequencies[3] == 0


def test_greedy_decoding_equals_argmax_over_full_recomputes():
    model = tiny_model()
    prompt_ids, prompt_mask = left_pad(PROMPTS, pad_token_id=0)
    cfg = SamplingConfig(max_new_tokens=6, temperature=0.0)
    out = generate(model, prompt_ids, prompt_mask, cfg, torch.Generator().manual_seed(0))
    again = generate(model, prompt_ids, prompt_mask, cfg, torch.Generator().manual_seed(1))
    assert torch.equal(out.token_ids, again.token_ids)
    for row, prompt in enumerate(PROMPTS):  # each prompt alone, no padding, no cache
        ids = torch.tensor([prompt])
        with torch.no_grad():
            for _ in range(6):
                ids = torch.cat([ids, model(ids)[:, -1].argmax(-1, keepdim=True)], dim=1)
        assert out.token_ids[row].tolist() == ids[0, len(prompt) :].tolist()
    assert out.mask.all() and out.finish_reasons == ["length"] * 3
    assert torch.equal(out.log_probs, torch.zeros(3, 6))  # greedy samples from a point mass


@pytest.mark.parametrize(("temperature", "top_k", "top_p"), [(1.0, 0, 1.0), (1.0, 8, 0.9), (0.7, 8, 0.9)])
def test_returned_log_probs_equal_a_fresh_forward_pass(temperature, top_k, top_p):
    model = tiny_model()
    prompt_ids, prompt_mask = left_pad(PROMPTS, pad_token_id=0)
    cfg = SamplingConfig(max_new_tokens=8, temperature=temperature, top_k=top_k, top_p=top_p, stop_token_ids=(3,))
    out = generate(model, prompt_ids, prompt_mask, cfg, torch.Generator().manual_seed(4))
    ids, attention_mask, completion_mask = full_sequence(prompt_ids, prompt_mask, out)
    P = prompt_ids.shape[1]
    log_pi = sequence_log_probs(model, ids, attention_mask, completion_mask)
    torch.testing.assert_close(out.policy_log_probs, log_pi[:, P:], atol=1e-5, rtol=0)
    assert torch.equal(log_pi[:, :P], torch.zeros_like(log_pi[:, :P]))
    with torch.no_grad():  # log q: the cut, renormalised distribution at the full recompute's logits
        logits = model(ids, attention_mask)[:, P - 1 : -1]  # (B, L, V)
    log_q = sampling_log_probs(logits.flatten(0, 1), temperature, top_k, top_p).view(logits.shape)
    log_q = log_q.gather(-1, out.token_ids[..., None]).squeeze(-1)
    torch.testing.assert_close(out.log_probs[out.mask], log_q[out.mask], atol=1e-5, rtol=0)
    assert torch.isfinite(out.log_probs).all()  # only kept tokens were drawn
    if temperature == 1.0 and top_k == 0 and top_p == 1.0:
        torch.testing.assert_close(out.log_probs, out.policy_log_probs)
    elif temperature == 1.0:  # renormalising over a cut set raises the kept tokens' probabilities
        assert (out.log_probs[out.mask] >= out.policy_log_probs[out.mask]).all()
        assert (out.log_probs[out.mask] > out.policy_log_probs[out.mask]).any()


def test_sequence_log_probs_by_hand_and_differentiable():
    model = tiny_model()
    ids = torch.tensor([[0, 0, 5, 6, 7, 8], [1, 2, 3, 4, 9, 0]])
    attention_mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])
    completion_mask = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 1, 0]])
    log_pi = sequence_log_probs(model, ids, attention_mask, completion_mask, temperature=2.0)
    with torch.no_grad():  # row 1's token 9 given 1, 2, 3, 4: the last position of that prefix, alone
        expected = (model(ids[1:, :4])[0, -1] / 2.0).log_softmax(-1)[9]
    torch.testing.assert_close(log_pi[1].detach(), torch.tensor([0.0, 0, 0, 0, expected.item(), 0]), atol=1e-5, rtol=0)
    log_pi.sum().backward()
    assert model.lm_head.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="first position"):
        sequence_log_probs(model, ids, attention_mask, torch.ones_like(completion_mask))


def test_seeded_samples_are_reproducible():
    model = tiny_model()
    prompt_ids, prompt_mask = left_pad(PROMPTS, pad_token_id=0)
    cfg = SamplingConfig(max_new_tokens=10, temperature=1.0)
    first, second, other = (
        generate(model, prompt_ids, prompt_mask, cfg, torch.Generator().manual_seed(seed)) for seed in (7, 7, 8)
    )
    assert torch.equal(first.token_ids, second.token_ids) and torch.equal(first.log_probs, second.log_probs)
    assert not torch.equal(first.token_ids, other.token_ids)


def test_stop_tokens_end_rows():
    model = tiny_model()
    prompt_ids, prompt_mask = left_pad(PROMPTS, pad_token_id=0)
    free = generate(model, prompt_ids, prompt_mask, SamplingConfig(12, temperature=0.0), torch.Generator())
    stop = int(free.token_ids[0, 2])  # row 0's third greedy token
    cfg = SamplingConfig(12, temperature=0.0, stop_token_ids=(stop, VOCAB + 5))
    out = generate(model, prompt_ids, prompt_mask, cfg, torch.Generator(), pad_token_id=-1)
    for row in range(3):
        tokens = free.token_ids[row].tolist()
        length = tokens.index(stop) + 1 if stop in tokens else 12  # up to and including the first stop token
        assert out.mask[row].tolist() == [True] * length + [False] * (out.mask.shape[1] - length)
        assert out.token_ids[row, :length].tolist() == tokens[:length]
        assert (out.token_ids[row, length:] == -1).all() and (out.policy_log_probs[row, length:] == 0).all()
        assert out.finish_reasons[row] == ("stop" if stop in tokens else "length")
    assert out.finish_reasons[0] == "stop" and out.mask[0].sum() <= 3


def test_bad_prompts_and_configs_are_refused():
    model = tiny_model()
    right_padded = torch.tensor([[1, 1, 0]], dtype=torch.bool)
    with pytest.raises(ValueError, match="left-padded"):
        generate(model, torch.tensor([[4, 5, 0]]), right_padded, SamplingConfig(2), torch.Generator())
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0.0)
    with pytest.raises(ValueError, match="at least one token"):
        left_pad([[1], []], pad_token_id=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    cpu, cuda = tiny_model(), tiny_model("cuda")
    prompt_ids, prompt_mask = left_pad(PROMPTS, pad_token_id=0)
    greedy = SamplingConfig(max_new_tokens=8, temperature=0.0)
    on_cpu = generate(cpu, prompt_ids, prompt_mask, greedy, torch.Generator())
    on_cuda = generate(cuda, prompt_ids.cuda(), prompt_mask.cuda(), greedy, torch.Generator())
    assert torch.equal(on_cuda.token_ids.cpu(), on_cpu.token_ids)
    sampled = SamplingConfig(max_new_tokens=8, temperature=0.8, top_p=0.95)
    first, second = (
        generate(cuda, prompt_ids.cuda(), prompt_mask.cuda(), sampled, torch.Generator().manual_seed(3)) for _ in "ab"
    )
    assert torch.equal(first.token_ids, second.token_ids)
    ids, attention_mask, completion_mask = full_sequence(prompt_ids.cuda(), prompt_mask.cuda(), first)
    log_pi = sequence_log_probs(cuda, ids, attention_mask, completion_mask)[:, prompt_ids.shape[1] :]
    torch.testing.assert_close(first.policy_log_probs, log_pi, atol=1e-4, rtol=0)
    assert math.isclose(float(first.mask.float().mean()), 1.0)  # no stop ids: every row runs to the length
