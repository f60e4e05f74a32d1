"""LoRA adapters through `peft`, on our transformer or a `transformers` model, merged back into a plain checkpoint.

Hu et al. (2021), "LoRA: Low-rank adaptation of large language models", section 4.1: a frozen weight W0 (out, in)
gains a trainable low-rank update,

    h = W0 x + (alpha / r) B A x,    A (r, in) ~ Kaiming-uniform,  B (out, r) = 0   (so training starts at W0),

and after training the update is folded in, W = W0 + (alpha / r) B A, which leaves a model of the original shape: it is
saved as an ordinary Hugging Face directory (`hf_io.save_pretrained` for ours, `save_pretrained` of `transformers` for
theirs) that `AutoModelForCausalLM` and `llm_rl.hf_io.load_model` read without peft.

Choices:
1. The adapters go on every linear layer inside the blocks (attention q/k/v/o and the MLP's gate/up/down, section 7.1's
   "all weight matrices" setting); the embeddings, norms and output layer stay frozen. `target_modules` narrows it.
2. `peft.get_peft_model` changes the given model in place (its Linear layers become LoRA layers). Our Transformer comes
   back inside peft's wrapper, which forwards attributes; an `HFCausalLM` comes back as itself with peft's wrapper
   inside. Either way `sampling.generate` and `sequence_log_probs` take the result unchanged.
3. A training run checkpoints the adapters (`adapter_state`, peft's names) beside a merged copy of the model
   (`save_training_model`); resuming rebuilds W0 from the run's initial model and loads the adapters back
   (`load_adapter_state`), which continues exactly, where loading the merged weights and adding fresh adapters
   would not.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from llm_rl.causal_lm import CausalLM, HFCausalLM, save_causal_lm
from llm_rl.model import Transformer
from rl.errors import UserError

if TYPE_CHECKING:
    from peft import PeftModel
    from tokenizers import Tokenizer

BLOCK_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""The linear layers of one block of our transformer (and of Llama / Qwen2 in transformers)."""


@dataclass(frozen=True)
class LoRAConfig:
    """Shape of the LoRA adapters."""

    rank: int = 8
    """Rank r of each update B A."""
    alpha: float = 16.0
    """The update is scaled by alpha / r."""
    dropout: float = 0.0
    """Dropout on the adapter's input during training."""
    target_modules: tuple[str, ...] = ()
    """Names of the linear layers that get adapters; empty: every linear layer inside the blocks."""

    def __post_init__(self) -> None:
        if self.rank < 1 or self.alpha <= 0 or not 0 <= self.dropout < 1:
            raise ValueError("rank must be >= 1, alpha > 0 and dropout in [0, 1)")


def with_lora(model: CausalLM, cfg: LoRAConfig) -> PeftModel | HFCausalLM:
    """`model` with adapters on its block linears; only the adapters require gradients (the model changes in place)."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise UserError("LoRA needs the peft package: pip install peft (or set lora_rank=0).") from None

    targets: list[str] | str = list(cfg.target_modules)
    if not targets:  # peft's "all-linear" skips the output layer of a transformers model; ours names its layers
        targets = list(BLOCK_LINEARS) if isinstance(model, Transformer) else "all-linear"
    lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets, bias="none")
    if isinstance(model, HFCausalLM):
        model.hf = get_peft_model(model.hf, lora)
        return model
    return get_peft_model(model, lora)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters an optimiser should update (the adapters, for a model from `with_lora`)."""
    return [p for p in model.parameters() if p.requires_grad]


def merged(model: PeftModel | HFCausalLM) -> CausalLM:
    """The model with W = W0 + (alpha / r) B A folded into each adapted layer and the adapters removed."""
    if isinstance(model, HFCausalLM):
        model.hf = model.hf.merge_and_unload()
        return model
    return model.merge_and_unload()


def save_merged(model: PeftModel | HFCausalLM, tokenizer: Tokenizer | None, path: str | Path,
                source: str | Path | None = None) -> Path:  # fmt: skip
    """Merges the adapters (`merged`) and writes the model as a Hugging Face directory; `source`: where it came from."""
    return save_causal_lm(merged(model), tokenizer, path, source)


def peft_model(model: PeftModel | HFCausalLM) -> PeftModel:
    """peft's wrapper inside a model from `with_lora`."""
    return model.hf if isinstance(model, HFCausalLM) else model


def is_lora(model: nn.Module) -> bool:
    """Whether `model` came from `with_lora` (and still has its adapters)."""
    inner = model.hf if isinstance(model, HFCausalLM) else model
    return hasattr(inner, "peft_config")


def adapter_state(model: PeftModel | HFCausalLM) -> dict[str, Tensor]:
    """The adapters' weights by peft's names, on the CPU (what a checkpoint keeps of a LoRA run)."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(peft_model(model))
    return {name: weight.detach().cpu().contiguous() for name, weight in state.items()}


def load_adapter_state(model: PeftModel | HFCausalLM, state: dict[str, Tensor]) -> None:
    """Loads `adapter_state`'s weights into a model from `with_lora` of the same shape; ValueError if they differ."""
    from peft import set_peft_model_state_dict

    expected = adapter_state(model)
    if state.keys() != expected.keys() or any(state[k].shape != expected[k].shape for k in expected):
        raise ValueError(f"the saved adapters ({len(state)} tensors) do not fit this model's ({len(expected)})")
    set_peft_model_state_dict(peft_model(model), state)


def save_training_model(model: CausalLM | PeftModel, tokenizer: Tokenizer | None, path: str | Path,
                        source: str | Path | None, arrays: dict[str, np.ndarray]) -> Path:  # fmt: skip
    """A training run's checkpoint of the model: a Hugging Face directory at `path` (for a LoRA model, a merged copy,
    training goes on with the adapters), and a LoRA model's adapters added to the checkpoint's `arrays` as
    "lora.<name>"."""
    if not is_lora(model):
        return save_causal_lm(model, tokenizer, path, source)
    arrays.update({f"lora.{name}": weight.numpy() for name, weight in adapter_state(model).items()})
    return save_merged(copy.deepcopy(model), tokenizer, path, source)


def restore_adapters(model: CausalLM | PeftModel, arrays: dict[str, np.ndarray]) -> None:
    """Loads the "lora.<name>" arrays of a checkpoint into a LoRA model; nothing for a model without adapters."""
    if is_lora(model):
        load_adapter_state(model, {k.removeprefix("lora."): torch.from_numpy(v) for k, v in arrays.items()
                                   if k.startswith("lora.")})  # fmt: skip
