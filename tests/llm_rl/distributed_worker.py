"""One seeded Kimi iteration (sample, score, two SGD steps), run alone or under torchrun by test_distributed.py.

Usage: python distributed_worker.py OUT.safetensors  |  torchrun --nproc-per-node 2 distributed_worker.py OUT...
Rank 0 writes the parameters after the update, every rank's gradients of the first step, and the gathered rewards.
"""

from __future__ import annotations

import sys

import torch
from safetensors.torch import save_file

from llm_rl.distributed import all_gather_rows, close, data_parallel, init_ranks, shard
from llm_rl.model import ModelConfig, Transformer
from llm_rl.sampling import SamplingConfig, generate, left_pad, sequence_log_probs
from rl.pg_losses import mirror_descent_loss

PROMPTS = [[5, 9, 11, 3, 7, 21, 8], [30, 2], [14, 4, 4, 19], [6, 6, 12]]  # P = 4 problems
K, TAU = 2, 0.5  # responses per problem, Kimi's tau


def main(out: str) -> None:
    torch.set_num_threads(1)
    ranks = init_ranks("cpu")
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=40, eos_token_ids=(3,)))
    mine = shard(range(len(PROMPTS)), ranks)  # this rank's problems
    rows = [p for p in mine for _ in range(K)]  # (B,) problem-major, B = P / N * K
    generators = [torch.Generator().manual_seed(100 + p * K + j) for p in mine for j in range(K)]
    prompt_ids, prompt_mask = left_pad([PROMPTS[p] for p in rows], pad_token_id=0)
    with torch.no_grad():
        out_tokens = generate(model, prompt_ids, prompt_mask, SamplingConfig(6, stop_token_ids=(3,)), generators)
    rewards = (out_tokens.token_ids[:, 0] % 2 == 0).float().reshape(len(mine), K)  # a verifier: even first token
    ids = torch.cat([prompt_ids, out_tokens.token_ids], 1)
    attention_mask = torch.cat([prompt_mask, out_tokens.mask], 1)
    completion_mask = torch.cat([torch.zeros_like(prompt_mask), out_tokens.mask], 1)
    with torch.no_grad():
        old_log_probs = sequence_log_probs(model, ids, attention_mask, completion_mask)
    baselines = rewards.mean(1, keepdim=True).expand_as(rewards).reshape(-1)  # tau log Z: the group's mean reward
    policy = data_parallel(model, ranks)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(2):
        log_probs = policy(ids, attention_mask, completion_mask)
        loss = mirror_descent_loss(log_probs, old_log_probs, rewards.reshape(-1), baselines, TAU, completion_mask)
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            grads = {f"grad.{n}": p.grad.clone() for n, p in model.named_parameters()}
        optimizer.step()
    gathered = all_gather_rows(rewards, ranks)  # (P, K) in problem order
    if ranks.is_main:
        params = {f"param.{n}": p.detach().contiguous() for n, p in model.named_parameters()}
        save_file(params | grads | {"rewards": gathered}, out)
    close(ranks)


if __name__ == "__main__":
    main(sys.argv[1])
