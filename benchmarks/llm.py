"""Language-model speed: rollout and training throughput, peak memory, model FLOPs utilisation, checkpointing savings.

    pip install -e ".[dev]"
    python benchmarks/llm.py                                  # CUDA if present: bf16, the tiny and 100m presets
    python benchmarks/llm.py --device cpu --presets tiny 100m --batch 4 --new-tokens 16 --train-batch 2 --train-len 128

For each model preset, with random weights (speed does not depend on them):
1. Rollouts: greedy completions of `--new-tokens` tokens for `--batch` random prompts of `--prompt-len` tokens, by
   ours (`fast_sampling.generate_continuous`: static cache, CUDA graph on CUDA), by the plain sampler
   (`sampling.generate`), and by Hugging Face `transformers` `generate` on the same weights saved and reloaded as a
   LlamaForCausalLM; generated tokens per second of each and the ratio ours / transformers (the goal on a GPU: 3x).
2. Training: Adam steps on the next-token loss of `--train-batch` sequences of `--train-len` tokens under the
   precision (bf16 autocast over float32 weights on CUDA, float32 on the CPU); tokens per second, peak memory
   (CUDA: max allocated; CPU: the process's peak resident set), and MFU = 6 N tokens/s / peak FLOP/s (N parameters;
   the attention's own FLOPs are not counted), with the peak from --peak-tflops (989: H100 SXM dense bf16).
3. Gradient checkpointing on the same training step: the activation memory kept for backward (the distinct tensors
   autograd saves, parameters excluded, counted with saved-tensor hooks; on CUDA also the peak allocation) without and
   with it, and the step-time cost. The recomputation briefly rebuilds one block's activations in backward; the
   saved-tensor count leaves that out, CUDA's peak allocation includes it.
Each timing is the median of --repeats runs after one warm-up.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llm_rl.fast_sampling import generate_continuous  # noqa: E402
from llm_rl.hf_io import save_pretrained  # noqa: E402
from llm_rl.model import Transformer, num_parameters, preset  # noqa: E402
from llm_rl.precision import autocast  # noqa: E402
from llm_rl.sampling import SamplingConfig, generate, left_pad  # noqa: E402
from rl.errors import run_script  # noqa: E402


def timed(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median seconds of `repeats` calls of fn after one warm-up call."""
    fn()
    seconds = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def rollout_rates(model: Transformer, args: argparse.Namespace) -> dict[str, float]:
    """Generated tokens per second of our two samplers and of transformers' generate, same prompts and weights."""
    from transformers import AutoModelForCausalLM

    generator = torch.Generator().manual_seed(0)
    prompts = torch.randint(3, model.cfg.vocab_size, (args.batch, args.prompt_len), generator=generator).tolist()
    cfg = SamplingConfig(args.new_tokens, temperature=0.0)  # greedy, no stop ids: every row makes new_tokens tokens
    ids, mask = left_pad(prompts, 0, model.device)
    with tempfile.TemporaryDirectory() as path:
        save_pretrained(model, None, path)
        hf = AutoModelForCausalLM.from_pretrained(path, dtype=model.dtype).to(model.device).eval()
    runs = {
        "ours": lambda: generate_continuous(model, prompts, cfg, generator, batch_size=args.batch),
        "plain": lambda: generate(model, ids, mask, cfg, generator),
        "transformers": lambda: hf.generate(
            input_ids=ids, attention_mask=mask.long(), max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
            do_sample=False, pad_token_id=0,
        ),
    }  # fmt: skip
    with torch.no_grad():
        return {
            name: args.batch * args.new_tokens / timed(run, args.repeats, model.device) for name, run in runs.items()
        }


def training_step(model: Transformer, optimizer: torch.optim.Optimizer, ids: torch.Tensor, precision: str) -> None:
    """One Adam step on the mean next-token negative log-likelihood, log-softmax in float32."""
    with autocast(precision, ids.device):
        logits = model(ids[:, :-1])
    loss = -logits.float().log_softmax(-1).gather(-1, ids[:, 1:, None]).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def saved_bytes(model: Transformer, ids: torch.Tensor, precision: str) -> int:
    """Bytes of the distinct tensors autograd keeps for the backward pass of one forward pass, the parameters left out
    (they are in memory anyway): the activation memory."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), autocast(precision, ids.device):
        model(ids[:, :-1])
    return sum(storages.values())


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: the peak allocation since the last reset; CPU: the process's peak resident set so far."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # Linux reports KiB


def training_figures(model: Transformer, args: argparse.Namespace, recompute: bool) -> dict[str, float]:
    """Tokens/s, MFU, peak memory and activation bytes of the training step, with or without checkpointing."""
    model.train()
    model.gradient_checkpointing = recompute
    ids = torch.randint(0, model.cfg.vocab_size, (args.train_batch, args.train_len + 1), device=model.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    if model.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(model.device)
    seconds = timed(lambda: training_step(model, optimizer, ids, args.precision), args.repeats, model.device)
    tokens_per_s = args.train_batch * args.train_len / seconds
    mfu = 6 * num_parameters(model) * tokens_per_s / (args.peak_tflops * 1e12)
    figures = {"tokens_per_s": tokens_per_s, "mfu": mfu, "peak_mb": peak_memory_mb(model.device)}
    figures["activation_mb"] = saved_bytes(model, ids, args.precision) / 2**20
    model.gradient_checkpointing = False
    return figures


def report(name: str, model: Transformer, args: argparse.Namespace) -> None:
    print(f"\n== {name}: {num_parameters(model) / 1e6:.1f}M parameters on {model.device}, {args.precision} ==")
    sampler_model = model.to(torch.bfloat16) if args.precision == "bf16" else model  # rollouts in bf16 weights
    rates = rollout_rates(sampler_model.eval(), args)
    print(
        f"rollouts ({args.batch} x {args.new_tokens} new tokens): ours {rates['ours']:,.0f} tok/s | plain sampler "
        f"{rates['plain']:,.0f} | transformers generate {rates['transformers']:,.0f} | "
        f"ours / transformers {rates['ours'] / rates['transformers']:.2f}x"
    )
    model = model.float()  # float32 master weights for training
    plain, recomputed = training_figures(model, args, False), training_figures(model, args, True)
    print(
        f"training ({args.train_batch} x {args.train_len} tokens): {plain['tokens_per_s']:,.0f} tok/s | "
        f"MFU {100 * plain['mfu']:.2f}% of {args.peak_tflops:g} TFLOP/s | peak memory {plain['peak_mb']:,.0f} MB"
    )
    saved = 1 - recomputed["activation_mb"] / plain["activation_mb"]
    print(
        f"gradient checkpointing: activations {plain['activation_mb']:,.1f} MB -> {recomputed['activation_mb']:,.1f} "
        f"MB ({100 * saved:.0f}% saved) | step time x{plain['tokens_per_s'] / recomputed['tokens_per_s']:.2f}"
        + (f" | peak memory {recomputed['peak_mb']:,.0f} MB" if model.device.type == "cuda" else "")
    )  # the CPU's peak resident set never goes down, so only CUDA's resettable peak compares the two


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "100m"], help="model presets (llm_rl.model.PRESETS)")
    parser.add_argument("--device", default="cuda" if cuda else "cpu", help="cpu or cuda")
    parser.add_argument("--precision", default=None, help="fp32 or bf16 (default: bf16 on CUDA, fp32 on the CPU)")
    parser.add_argument("--batch", type=int, default=64, help="prompts per rollout batch")
    parser.add_argument("--prompt-len", type=int, default=32, help="tokens per prompt")
    parser.add_argument("--new-tokens", type=int, default=256, help="tokens generated per prompt")
    parser.add_argument("--train-batch", type=int, default=16, help="sequences per training step")
    parser.add_argument("--train-len", type=int, default=1024, help="tokens per training sequence")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="peak dense FLOP/s in TFLOP/s (H100 bf16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    args.precision = args.precision or ("bf16" if torch.device(args.device).type == "cuda" else "fp32")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for name in args.presets:
        report(name, Transformer(preset(name)).to(args.device), args)


if __name__ == "__main__":
    run_script(main)
