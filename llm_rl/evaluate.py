"""Accuracy and pass@k of a language model on problems with verifiable answers, by batched generation.

Each problem's prompt is `<bos> problem.prompt` (no <bos> when the model has none); `samples` completions are drawn
per problem with `llm_rl.sampling.generate` (greedy at temperature 0) and checked with `check`: the task's verifier
for its own problems, `llm_rl.data.row_check`'s for rows of a file; without one, `llm_rl.rewards.is_correct` against
the reference answer.

pass@k, Chen et al. (2021), "Evaluating large language models trained on code", eq. 1: with n samples of which c
are correct, the unbiased estimate of the chance that at least one of k samples is correct is

    pass@k = 1 - C(n - c, k) / C(n, k)   (= 1 when n - c < k),   computed as 1 - prod_{i=n-c+1}^{n} (1 - k / i).

Choices:
1. `accuracy` scores the first completion of each problem: the greedy one at temperature 0, one sample otherwise.
2. `pass_at_k` takes k = samples (n = k, so it is "any of the k correct"); `pass_at_k_estimate` gives the estimator
   for k < n.
3. The prompt is the raw text, without a chat template: the built-in tasks are plain text, and a chat model can
   still be fine-tuned (`rl llm sft --model PATH`) on this format first.
4. The completion's length counts the generated tokens, the stop token included.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tokenizers import Tokenizer

from llm_rl.model import Transformer
from llm_rl.rewards import is_correct
from llm_rl.sampling import SamplingConfig, check_context, generate, left_pad
from llm_rl.tasks import Problem, Task
from rl.errors import UserError

Check = Callable[[Problem, str], bool]
"""check(problem, completion_text) -> whether the completion's final answer is right."""
PAD_TOKENS = ("<pad>", "<|endoftext|>", "<|finetune_right_pad_id|>")
"""Tokens tried, in order, as the padding id when the model's config names none (ours, Qwen's, Llama 3's)."""


@dataclass(frozen=True)
class TextCodec:
    """How a model's text is framed: the tokenizer and its <bos>, <eos> and padding ids."""

    tokenizer: Tokenizer
    bos_id: int | None
    """Put before every prompt (None: the model has no <bos>)."""
    eos_id: int | None
    """Ends every training solution; None only for a model that cannot be fine-tuned here."""
    pad_id: int
    """Fills padding positions (always masked out)."""
    stop_ids: tuple[int, ...]
    """Token ids that end a completion."""

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def prompt_ids(self, problem: Problem) -> list[int]:
        """<bos> prompt."""
        return ([] if self.bos_id is None else [self.bos_id]) + self.encode(problem.prompt)

    def decode(self, ids: Sequence[int]) -> str:
        """The text of a completion, special tokens (the stop token) left out."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


def text_codec(model: Transformer, tokenizer: Tokenizer) -> TextCodec:
    """The codec for a model: bos and eos ids from its config, padding from the tokenizer (else eos, else 0)."""
    eos_ids = model.cfg.eos_token_ids
    pad_id = next((tokenizer.token_to_id(t) for t in PAD_TOKENS if tokenizer.token_to_id(t) is not None), None)
    if pad_id is None:
        pad_id = eos_ids[0] if eos_ids else 0
    return TextCodec(tokenizer, model.cfg.bos_token_id, eos_ids[0] if eos_ids else None, pad_id, eos_ids)


def check_prompts_fit(model: Transformer, codec: TextCodec, problems: Sequence[Problem], max_new_tokens: int) -> None:
    """`sampling.check_context` for the longest of the problems' prompts (<bos> included), naming its row when it
    comes from a data file."""
    lengths = [len(codec.prompt_ids(problem)) for problem in problems]
    if not lengths:
        check_context(model, 0, max_new_tokens)  # max_new_tokens alone may not fit
        return
    longest = int(np.argmax(lengths))  # the first of the longest
    check_context(model, lengths[longest], max_new_tokens, problems[longest].origin)


def pass_at_k_estimate(n: int, c: int, k: int) -> float:
    """Chen et al.'s unbiased pass@k from n samples of which c are correct (module docstring)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


@dataclass(frozen=True)
class EvalResult:
    """What `evaluate` measured."""

    accuracy: float
    """Share of problems whose first completion is correct (greedy at temperature 0)."""
    pass_at_k: float
    """Share of problems with a correct completion among the k = `samples` drawn (unbiased estimator)."""
    k: int
    """Samples per problem."""
    sample_accuracy: float
    """Share of all completions that are correct (the pass@1 estimate from every sample)."""
    mean_length: float
    """Mean completion length in tokens, the stop token included."""
    n: int
    """Number of problems."""
    per_level: dict[int, float]
    """Accuracy (first completion) at each difficulty level present."""
    completions: list[str]
    """The first completion of each problem, in order (for reading mistakes)."""


def evaluate(
    model: Transformer,
    tokenizer: Tokenizer,
    problems: Sequence[Problem],
    samples: int = 1,
    batch_size: int = 64,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    seed: int = 0,
    check: Check | None = None,
) -> EvalResult:
    """Generates `samples` completions for every problem, `batch_size` rows at a time, and scores them."""
    if not problems:
        raise UserError("there are no problems to evaluate on; pass --n 1 or more, or a data file with rows.")
    if samples < 1 or batch_size < 1:
        raise UserError(f"samples ({samples}) and batch_size ({batch_size}) must be at least 1.")
    if samples > 1 and temperature == 0:
        raise UserError(f"{samples} greedy samples would all be the same; pass a temperature above 0 (e.g. 1.0).")
    check = check or (lambda problem, text: is_correct(text, problem.answer))
    codec = text_codec(model, tokenizer)
    check_prompts_fit(model, codec, problems, max_new_tokens)
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature, stop_token_ids=codec.stop_ids)
    generator = torch.Generator().manual_seed(seed)
    rows = [problem for problem in problems for _ in range(samples)]  # each problem's samples side by side
    correct, lengths, texts = [], [], []
    was_training = model.training
    model.eval()
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        prompt_ids, prompt_mask = left_pad([codec.prompt_ids(p) for p in chunk], codec.pad_id, model.device)
        out = generate(model, prompt_ids, prompt_mask, sampling, generator, codec.pad_id)
        for problem, ids, mask in zip(chunk, out.token_ids.tolist(), out.mask.tolist(), strict=True):
            text = codec.decode([token for token, real in zip(ids, mask, strict=True) if real])
            texts.append(text)
            correct.append(check(problem, text))
            lengths.append(sum(mask))
    model.train(was_training)
    per_problem = np.array(correct, dtype=bool).reshape(len(problems), samples)  # (P, G)
    by_level: dict[int, list[bool]] = defaultdict(list)
    for problem, first in zip(problems, per_problem[:, 0], strict=True):
        by_level[problem.level].append(bool(first))
    return EvalResult(
        accuracy=float(per_problem[:, 0].mean()),
        pass_at_k=float(np.mean([pass_at_k_estimate(samples, int(c), samples) for c in per_problem.sum(1)])),
        k=samples,
        sample_accuracy=float(per_problem.mean()),
        mean_length=float(np.mean(lengths)),
        n=len(problems),
        per_level={level: float(np.mean(flags)) for level, flags in sorted(by_level.items())},
        completions=texts[::samples],
    )


def held_out_problems(task: Task, n: int, seed: int, levels: Sequence[int] = ()) -> list[Problem]:
    """n problems from the task's held-out split, spread evenly over `levels` (default: its held-out levels)."""
    levels = tuple(levels) or task.held_out_levels
    rng = np.random.default_rng(seed)
    return [task.sample(rng, levels[i % len(levels)], "held_out") for i in range(n)]
