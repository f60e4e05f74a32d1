"""Data-parallel RL training with torch's DDP or FSDP2, launched by `torchrun --nproc-per-node N -m rl.cli llm train`.

Each of the N processes (ranks) holds a full copy of the policy. An iteration's P problems are split into N equal
contiguous shards; rank n samples the k responses of its P / N problems, scores them, and computes the loss on them.
DDP (Li et al. 2020, "PyTorch Distributed: experiences on accelerating data parallel training") averages the
gradients over the ranks during the backward pass, so every rank takes the same optimiser step:

    grad = 1/N sum_n grad L_n(theta),   L_n = mean over rank n's sequences   =>   grad = grad of the mean over all P k

which is the single-process full-batch gradient whenever the loss is a mean over sequences with equal shard sizes
(Kimi's eq. 3 and GRPO's sequence mean). RLOO's token mean is a mean over a shard's tokens, so its loss is scaled by
`token_share`, N times the shard's share of all tokens, which makes the average over the ranks the mean over every
token again. A problem's k responses stay on one rank, so the group statistics (the mean reward as tau log Z,
leave-one-out and group-normalised advantages) need no communication; `all_gather_rows` collects the success rates
for the problem sampler, which every rank runs identically from the same seed, and `all_sum` the logged totals.

Choices:
1. The process group is read from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT): gloo on
   CPU, nccl on CUDA; one process without those variables runs undistributed and every function here is a no-op.
2. DDP only hooks `forward`, so the policy is wrapped in `SequenceLogProbs`, whose forward is
   `sampling.sequence_log_probs`; sampling uses the unwrapped model, which needs no gradients.
3. Every response draws its tokens from its own generator (`sampling.row_generators`), seeded alike on every rank, so
   a response gets the same tokens whichever rank samples it: N processes train on what one process would, up to the
   float rounding of different batch shapes.
4. Rank 0 logs, evaluates and saves the checkpoint; the others wait for it at the next collective. A stop signal on
   any rank stops all of them after the same iteration (`any_rank`).
5. Partial rollouts are refused with more than one process: the groups waiting for their next segment would have to
   be balanced over the ranks.
6. `parallelism = "fsdp"` shards instead of copying (FSDP2, Zhao et al. 2023, "PyTorch FSDP"; `fully_shard` on
   every transformer block, then on the whole policy): each rank keeps 1/N of the parameters, gradients and Adam
   moments, and gathers a block's parameters when the block runs. The gradient is DDP's (reduce-scatter averages
   over the ranks). Sampling, scoring and evaluation call the model outside its forward, so they run inside
   `gathered`, which gathers every parameter once, keeps it through the many decoding steps (ranks stop decoding
   at different steps, and nothing may communicate then), and frees it after. Checkpoints gather the full model and
   optimiser state on rank 0 (`full_states`), so a checkpoint is the same Hugging Face directory as without FSDP.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from llm_rl.model import Block
from llm_rl.sampling import sequence_log_probs
from rl.errors import UserError

Item = TypeVar("Item")


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in the group."""

    rank: int
    """This process's index, 0 .. world_size - 1."""
    world_size: int
    """Number of processes."""
    device: torch.device
    """This process's device: cuda:LOCAL_RANK when CUDA is asked for, else the CPU."""

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, evaluates and saves."""
        return self.rank == 0


def init_ranks(device: str = "cpu") -> Ranks:
    """Joins torchrun's process group (gloo on CPU, nccl on CUDA); one process without torchrun is rank 0 of 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    on_cuda = torch.device(device).type == "cuda"
    if on_cuda and not torch.cuda.is_available():
        raise UserError(f"device {device!r} was asked for but CUDA is not available; pass --device cpu.")
    where = torch.device("cuda", local_rank) if on_cuda else torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        if on_cuda:
            torch.cuda.set_device(where)
        dist.init_process_group("nccl" if on_cuda else "gloo", rank=rank, world_size=world_size)
    return Ranks(rank, world_size, where)


def shard(items: Sequence[Item], ranks: Ranks) -> list[Item]:
    """Rank n's contiguous 1/N of `items` (problems, say); the count must divide evenly (equal shard weights)."""
    if len(items) % ranks.world_size:
        raise UserError(
            f"{len(items)} problems per iteration do not split evenly over {ranks.world_size} processes; "
            "make problems_per_iteration a multiple of --nproc-per-node."
        )
    size = len(items) // ranks.world_size
    return list(items[ranks.rank * size : (ranks.rank + 1) * size])


def all_sum(values: Tensor, ranks: Ranks) -> Tensor:
    """The elementwise sum over the ranks of a float tensor (logged totals, say); the tensor itself with one process."""
    if ranks.world_size == 1:
        return values
    total = values.to(ranks.device, copy=True)  # nccl reduces CUDA tensors only
    dist.all_reduce(total)
    return total.to(values.device)


def any_rank(flag: bool, ranks: Ranks) -> bool:
    """Whether `flag` is true on some rank (a stop signal, say), so that every rank leaves the loop together."""
    return bool(all_sum(torch.tensor([float(flag)]), ranks).item())


def broadcast_path(path: Path | None, ranks: Ranks) -> Path:
    """Rank 0's `path` (the run directory it made) on every rank; the others pass None."""
    if ranks.world_size == 1:
        return Path(path)
    encoded = torch.zeros(4096, dtype=torch.uint8, device=ranks.device)
    if ranks.is_main:
        raw = str(path).encode()
        if len(raw) > len(encoded):
            raise UserError(f"the run directory path {str(path)[:80]}... is too long; pick a shorter --runs-dir.")
        encoded[: len(raw)] = torch.tensor(list(raw), dtype=torch.uint8)
    dist.broadcast(encoded, src=0)
    return Path(bytes(encoded[encoded > 0].tolist()).decode())


def token_share(completion_mask: Tensor, ranks: Ranks) -> float:
    """N times this rank's share of all ranks' counted tokens: scales a token-mean loss so that DDP's average over the
    ranks is the mean over every token; 1 with one process."""
    if ranks.world_size == 1:
        return 1.0
    local = completion_mask.sum().float().reshape(1).cpu()
    return float(local.item() * ranks.world_size / max(all_sum(local, ranks).item(), 1.0))


def all_gather_rows(local: Tensor, ranks: Ranks) -> Tensor:
    """Every rank's (P / N, ...) rows stacked in rank order: (P, ...); the tensor itself with one process."""
    if ranks.world_size == 1:
        return local
    on_device = local.to(ranks.device).contiguous()  # nccl gathers CUDA tensors only
    pieces = [torch.empty_like(on_device) for _ in range(ranks.world_size)]
    dist.all_gather(pieces, on_device)
    return torch.cat(pieces).to(local.device)


class SequenceLogProbs(nn.Module):
    """The policy as DDP needs it: forward(input_ids, attention_mask, completion_mask) -> log pi per token (B, L)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor, completion_mask: Tensor) -> Tensor:
        return sequence_log_probs(self.model, input_ids, attention_mask, completion_mask)


PARALLELISMS = ("ddp", "fsdp")
"""How the processes hold the policy: a full copy each (DDP), or 1/N of every parameter each (FSDP2)."""


def data_parallel(model: nn.Module, ranks: Ranks, parallelism: str = "ddp") -> nn.Module:
    """`SequenceLogProbs(model)`, with more than one process in DDP or sharded by FSDP2 (`parallelism`)."""
    policy = SequenceLogProbs(model)
    if ranks.world_size == 1:
        return policy
    if parallelism == "fsdp":
        return fully_sharded(policy)
    device_ids = [ranks.device.index] if ranks.device.type == "cuda" else None
    return DistributedDataParallel(policy, device_ids=device_ids)


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The model's repeated blocks: ours, or the classes a transformers model names in `_no_split_modules`."""
    names = set(getattr(getattr(model, "hf", None), "_no_split_modules", None) or ())
    return [m for m in model.modules() if isinstance(m, Block) or type(m).__name__ in names]


def fully_sharded(policy: SequenceLogProbs) -> nn.Module:
    """The policy sharded by FSDP2: each block its own unit, the rest (embeddings, final norm, output) the root's."""
    from torch.distributed.fsdp import fully_shard

    for block in transformer_blocks(policy.model):
        fully_shard(block)
    fully_shard(policy)
    with torch.no_grad():  # FSDP2 sets itself up in the root's first forward, which must precede any block's
        one = torch.ones(1, 1, dtype=torch.long, device=policy.model.device)
        policy(one, one.bool(), torch.zeros_like(one, dtype=torch.bool))
    policy.reshard()  # the root keeps its parameters whole after a forward; an optimiser must see the shards
    return policy


def is_sharded(policy: nn.Module) -> bool:
    """Whether `policy` came from `fully_sharded`."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(policy, FSDPModule)


@contextmanager
def gathered(policy: nn.Module) -> Iterator[None]:
    """Every parameter of a sharded policy whole while the block runs (no communication inside); a no-op otherwise.
    Every rank must enter it together: entering gathers from all ranks."""
    if not is_sharded(policy):
        yield
        return
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in policy.modules() if isinstance(m, FSDPModule)]
    blocks = [m for m in units if m is not policy]
    for block in blocks:
        block.set_reshard_after_forward(False)  # stay whole through every decoding step
    for unit in units:
        unit.unshard()
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()
        for block in blocks:
            block.set_reshard_after_forward(True)


def full_states(policy: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    """A sharded policy's whole model state dict (the unwrapped model's names) and optimiser state, on rank 0's CPU
    (empty on the other ranks); every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(policy, options=options)  # names start "model.", SequenceLogProbs' own
    optimizer_state = get_optimizer_state_dict(policy, optimizer, options=options)
    return {name.removeprefix("model."): value for name, value in model_state.items()}, optimizer_state


def load_full_optimizer_state(policy: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Loads `full_states`' optimiser state (read by every rank) into the sharded optimiser."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(policy, optimizer, state, options=StateDictOptions(full_state_dict=True))


def close(ranks: Ranks) -> None:
    """Leaves the process group (at the end of training), once every rank has got here: a rank that tears its gloo
    connections down while another still works (rank 0 saving) can take the process down with SIGABRT."""
    if ranks.world_size > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
