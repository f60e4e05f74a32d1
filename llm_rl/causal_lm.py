"""Any local Hugging Face causal LM behind our transformer's interface: ours where it fits, `transformers` elsewhere.

`load_causal_lm(path)` reads config.json: a LlamaForCausalLM or Qwen2ForCausalLM directory loads into
`llm_rl.model.Transformer` (`hf_io.load_model`); any other architecture loads with `transformers`'
`AutoModelForCausalLM` (safetensors only) and is wrapped in `HFCausalLM`, which answers the calls the sampler, the
trainer and the evaluator make of a model:

    hidden_states(input_ids (B, L), attention_mask (B, L), kv_cache=None) -> (B, L, E)    final-norm hidden states
    lm_head(hidden (..., E)) -> logits (..., V);   forward = lm_head(hidden_states(...));   cfg, device, dtype

so `sampling.generate`, `sampling.sequence_log_probs` and `evaluate.text_codec` take either. Position ids count the
real tokens before each one (left padding does not shift them), as in model.py.

Choices:
1. `HFCausalLM.cfg` is a `ModelConfig` that carries the vocabulary size, the bos/eos ids and the context length
   (what the callers read; `max_position_embeddings` from the config's `max_position_embeddings` or GPT-2's
   `n_positions`, unbounded when it names neither); its shape fields are a placeholder of one layer, one head of
   width 2, so the `KVCache` that `generate` allocates is only bookkeeping (the fill mask and positions). The keys
   and values live in transformers' own `DynamicCache`, which the wrapper keeps for the cache object it was last
   given: one generation at a time per wrapper.
2. Architectures whose logits are more than the output layer applied to the last hidden state (Gemma 2's soft
   capping, Cohere's logit scale) are refused rather than scored wrongly.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from llm_rl.hf_io import ARCHITECTURES, COMPANION_FILES, load_model, load_tokenizer, read_json, save_pretrained
from llm_rl.model import KVCache, ModelConfig, Transformer
from rl.errors import UserError, one_line

if TYPE_CHECKING:
    from tokenizers import Tokenizer

LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier_scale", "logits_scaling")
"""config.json fields that rescale the logits after the output layer: refused (choice 2)."""


def token_ids(value: Any) -> tuple[int, ...]:
    """An `eos_token_id` field (None, one id or a list) as a tuple."""
    return () if value is None else (int(value),) if isinstance(value, int) else tuple(int(v) for v in value)


class HFCausalLM(nn.Module):
    """A `transformers` causal LM with our Transformer's `hidden_states` / `lm_head` / `cfg` interface."""

    def __init__(self, hf: nn.Module) -> None:
        super().__init__()
        self.hf = hf
        config = hf.config
        generation = getattr(hf, "generation_config", None)
        eos = token_ids(config.eos_token_id) + token_ids(getattr(generation, "eos_token_id", None))
        context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        self.cfg = ModelConfig(
            vocab_size=config.vocab_size, hidden_size=1, intermediate_size=1, num_hidden_layers=1,
            num_attention_heads=1, num_key_value_heads=1, head_dim=2, bos_token_id=config.bos_token_id,
            eos_token_ids=tuple(dict.fromkeys(eos)), max_position_embeddings=int(context or sys.maxsize),
        )  # fmt: skip
        self._cache: tuple[KVCache, Any] | None = None  # (our bookkeeping cache, transformers' DynamicCache)

    @property
    def lm_head(self) -> nn.Module:
        return self.hf.get_output_embeddings()

    @property
    def body(self) -> nn.Module:
        """The transformer without its output layer (inside peft's wrapper once `lora.with_lora` has run)."""
        model = self.hf.get_base_model() if hasattr(self.hf, "get_base_model") else self.hf
        return model.base_model

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    def hidden_states(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, kv_cache: KVCache | None = None
    ) -> Tensor:
        """Final-norm hidden states (B, L, E); with `kv_cache` the tokens continue the ones it has seen."""
        real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        seen = torch.zeros(input_ids.shape[0], 1, dtype=torch.long, device=input_ids.device)
        mask, past = real, None
        if kv_cache is not None:
            from transformers import DynamicCache

            if self._cache is None or self._cache[0] is not kv_cache or kv_cache.length == 0:
                self._cache = (kv_cache, DynamicCache())
            past = self._cache[1]
            end = kv_cache.length + input_ids.shape[1]
            kv_cache.mask[:, kv_cache.length : end] = real
            seen, mask = kv_cache.positions[:, None], kv_cache.mask[:, :end]
        position_ids = (seen + real.cumsum(-1) - 1).clamp(min=0)  # (B, L)
        out = self.body(
            input_ids=input_ids, attention_mask=mask.long(), position_ids=position_ids, past_key_values=past,
            use_cache=past is not None,
        )  # fmt: skip
        if kv_cache is not None:
            kv_cache.length += input_ids.shape[1]
            kv_cache.positions += real.sum(-1)
        return out.last_hidden_state

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Logits (B, L, V) of the next token at every position."""
        return self.lm_head(self.hidden_states(input_ids, attention_mask))


CausalLM = Transformer | HFCausalLM


def require_directory(path: Path, what: str, fix: str) -> None:
    """A UserError unless `path` is a directory, saying whether it is missing or a file ("{what} {path} does not
    exist; {fix}.")."""
    if not path.is_dir():
        problem = f"{path} is a file, not a directory" if path.exists() else f"{what} {path} does not exist"
        raise UserError(f"{problem}; {fix}.")


def architecture(path: Path) -> str:
    """The first entry of config.json's `architectures`."""
    config = read_json(path / "config.json")
    names = config.get("architectures") or []
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise UserError(
            f"{path / 'config.json'} has an architectures field that is not a list of class names; restore the file "
            "from the original download."
        )
    if not names and "spec" in config:
        raise UserError(
            f"{path} is a training run directory, not a language model; pass the model directory of an `rl llm sft` "
            "or `rl llm train` run (RUN_DIR/model) or a Hugging Face model directory."
        )
    if not names:
        raise UserError(f"{path / 'config.json'} names no architectures; save the model with transformers.")
    return names[0]


def load_causal_lm(path: str | Path, dtype: torch.dtype | None = None, device: torch.device | str = "cpu") -> CausalLM:
    """Our Transformer for the architectures it supports (hf_io.ARCHITECTURES), else the wrapped transformers model."""
    path = Path(path)
    if architecture(path) in ARCHITECTURES:
        return load_model(path, dtype, device)
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError) as error:  # an unknown model_type or architecture, a missing field
        raise UserError(
            f"transformers cannot read {path / 'config.json'} ({one_line(error)}); check its model_type and "
            "architectures, or upgrade transformers for a newer model family."
        ) from None
    scaled = [name for name in LOGIT_TRANSFORMS if getattr(config, name, None) not in (None, 1, 1.0)]
    if scaled:
        raise UserError(f"{path} rescales its logits ({scaled[0]}), which llm_rl does not support; pick another model.")
    try:
        hf = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or "auto", use_safetensors=True)
    except (OSError, ValueError) as error:
        raise UserError(f"transformers cannot load {path} ({error}); check it is a causal LM in safetensors.") from None
    return HFCausalLM(hf.to(device))


def load_causal_lm_and_tokenizer(
    path: str | Path, dtype: torch.dtype | None = None, device: torch.device | str = "cpu"
) -> tuple[CausalLM, Tokenizer]:
    """(model, tokenizer) from a local Hugging Face directory of any causal LM (see `load_causal_lm`)."""
    return load_causal_lm(path, dtype, device), load_tokenizer(path)


def set_gradient_checkpointing(model: CausalLM, enabled: bool) -> None:
    """Turns recomputation of each block in the backward pass on or off, for our Transformer or a transformers one."""
    if isinstance(model, Transformer):
        model.gradient_checkpointing = enabled
    elif isinstance(model, HFCausalLM) and enabled:
        hf = model.hf  # transformers 5 renamed gradient_checkpointing_enable; non-reentrant is its default
        getattr(hf, "activation_checkpointing_enable", hf.gradient_checkpointing_enable)()
    elif isinstance(model, HFCausalLM):
        getattr(model.hf, "activation_checkpointing_disable", model.hf.gradient_checkpointing_disable)()


def save_causal_lm(
    model: CausalLM, tokenizer: Tokenizer | None, path: str | Path, source: str | Path | None = None
) -> Path:
    """Writes a Hugging Face directory for either kind of model; `source` is where it was loaded from."""
    if isinstance(model, Transformer):
        return save_pretrained(model, tokenizer, path, source=source)
    path = Path(path)
    model.hf.save_pretrained(path, safe_serialization=True)
    if source is not None and Path(source).resolve() != path.resolve():
        for name in COMPANION_FILES:
            if (Path(source) / name).is_file():
                shutil.copyfile(Path(source) / name, path / name)
    if tokenizer is not None:
        tokenizer.save(str(path / "tokenizer.json"))
    return path
