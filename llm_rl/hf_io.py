"""Reading and writing Hugging Face model directories: config.json, safetensors weights, tokenizer.json.

A directory written by `transformers`' `save_pretrained` for LlamaForCausalLM or Qwen2ForCausalLM (one
`model.safetensors`, or shards listed in `model.safetensors.index.json`) loads into `llm_rl.model.Transformer`, and
`save_pretrained` writes one that `transformers.AutoModelForCausalLM.from_pretrained` and `AutoTokenizer` read back.
Weights are safetensors only: nothing is unpickled, and `pytorch_model.bin` directories are refused.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from llm_rl.model import Llama3RopeScaling, ModelConfig, Transformer
from rl.checkpoint import atomic_write_bytes, atomic_write_json
from rl.errors import UserError, one_line

if TYPE_CHECKING:
    from tokenizers import Tokenizer

ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# Files that carry the chat template, special tokens and sampling defaults; copied over by save_pretrained(source=...)
COMPANION_FILES = ("tokenizer_config.json", "special_tokens_map.json", "generation_config.json", "chat_template.jinja")


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in a model directory's file; a UserError naming the file if it is missing or not an object."""
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} is missing; pass a Hugging Face model directory (one with config.json).") from None
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not valid JSON ({error}); restore it from the original download.") from None
    if not isinstance(content, dict):
        raise UserError(
            f"{path} holds a JSON {type(content).__name__}, not an object; restore it from the original download."
        )
    return content


def rope_fields(hf: dict[str, Any]) -> tuple[float, Llama3RopeScaling | None]:
    """rope_theta and the scaling from either layout: top-level `rope_theta` + `rope_scaling` (transformers 4 and
    the files on the Hub) or one `rope_parameters` dict (transformers 5)."""
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or params
    theta = float(hf.get("rope_theta") or params.get("rope_theta") or 10_000.0)
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return theta, None
    if kind != "llama3":
        raise UserError(f"rope scaling {kind!r} is not supported (only the default and 'llama3'); pick another model.")
    return theta, Llama3RopeScaling(
        factor=float(scaling["factor"]),
        low_freq_factor=float(scaling["low_freq_factor"]),
        high_freq_factor=float(scaling["high_freq_factor"]),
        original_max_position_embeddings=int(scaling["original_max_position_embeddings"]),
    )


def config_from_hf(hf: dict[str, Any], generation: dict[str, Any] | None = None) -> ModelConfig:
    """Our config from the contents of config.json (and generation_config.json, which may list more eos ids)."""
    by_family = {family: name for name, family in ARCHITECTURES.items()}
    architecture = (hf.get("architectures") or [by_family.get(hf.get("model_type"), hf.get("model_type"))])[0]
    if architecture not in ARCHITECTURES:
        raise UserError(f"architecture {architecture!r} is not supported; llm_rl loads {' and '.join(ARCHITECTURES)}.")
    family = ARCHITECTURES[architecture]
    if hf.get("hidden_act", "silu") != "silu":
        raise UserError(f"hidden_act {hf['hidden_act']!r} is not supported; llm_rl's MLP is SwiGLU (silu).")
    if family == "llama" and (hf.get("attention_bias") or hf.get("mlp_bias")):
        raise UserError("Llama checkpoints with attention_bias or mlp_bias are not supported; pick another model.")
    if family == "qwen2" and hf.get("use_sliding_window"):
        raise UserError("Qwen2 sliding-window attention is not supported; set use_sliding_window to false.")
    heads = int(hf["num_attention_heads"])
    theta, scaling = rope_fields(hf)
    eos_ids: list[int] = []
    for source in (hf, generation or {}):
        ids = source.get("eos_token_id")
        for token in [ids] if isinstance(ids, int) else ids or []:
            if token not in eos_ids:
                eos_ids.append(int(token))
    return ModelConfig(
        vocab_size=int(hf["vocab_size"]),
        hidden_size=int(hf["hidden_size"]),
        intermediate_size=int(hf["intermediate_size"]),
        num_hidden_layers=int(hf["num_hidden_layers"]),
        num_attention_heads=heads,
        num_key_value_heads=int(hf.get("num_key_value_heads") or heads),
        head_dim=int(hf.get("head_dim") or hf["hidden_size"] // heads),
        rope_theta=theta,
        rope_scaling=scaling,
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        max_position_embeddings=int(hf.get("max_position_embeddings", 2048)),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        attention_bias=family == "qwen2",
        bos_token_id=hf.get("bos_token_id"),
        eos_token_ids=tuple(eos_ids),
    )


def hf_config(cfg: ModelConfig, dtype: torch.dtype) -> dict[str, Any]:
    """config.json for `cfg` in the Hub layout (top-level rope_theta / rope_scaling), read by transformers 4 and 5."""
    if cfg.model_type == "qwen2" and cfg.head_dim * cfg.num_attention_heads != cfg.hidden_size:
        raise ValueError("the Qwen2 layout needs head_dim * num_attention_heads == hidden_size")
    scaling = None
    if cfg.rope_scaling is not None:
        scaling = {"rope_type": "llama3", **cfg.rope_scaling.__dict__}
    config: dict[str, Any] = {
        "architectures": [next(a for a, family in ARCHITECTURES.items() if family == cfg.model_type)],
        "model_type": cfg.model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": scaling,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "use_cache": True,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": list(cfg.eos_token_ids) if len(cfg.eos_token_ids) != 1 else cfg.eos_token_ids[0],
        "torch_dtype": str(dtype).removeprefix("torch."),
    }
    if cfg.model_type == "llama":
        config |= {"attention_bias": False, "mlp_bias": False, "pretraining_tp": 1}
    else:
        config |= {"use_sliding_window": False, "sliding_window": None, "max_window_layers": cfg.num_hidden_layers}
    return config


def read_weights(path: Path, device: torch.device | str) -> dict[str, torch.Tensor]:
    """Every tensor in `model.safetensors`, or in the shards that `model.safetensors.index.json` lists."""
    if (path / WEIGHTS_FILE).is_file():
        files = [path / WEIGHTS_FILE]
    elif (path / INDEX_FILE).is_file():
        files = [path / name for name in sorted(set(read_json(path / INDEX_FILE)["weight_map"].values()))]
    else:
        raise UserError(
            f"no {WEIGHTS_FILE} or {INDEX_FILE} in {path}; llm_rl reads safetensors only "
            "(convert a pytorch_model.bin with transformers' save_pretrained(safe_serialization=True))."
        )
    weights: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            weights |= load_file(file, device=str(device))
        except (SafetensorError, OSError) as error:
            raise UserError(f"cannot read {file} ({error}); download the checkpoint again.") from None
    return weights


def read_config(path: Path, generation: dict[str, Any] | None) -> ModelConfig:
    """Our config from path/config.json; a key it lacks or a value of the wrong kind is a UserError naming the file."""
    file = path / "config.json"
    content = read_json(file)
    try:
        return config_from_hf(content, generation)
    except UserError as error:  # an architecture or option llm_rl does not load: say which file asks for it
        raise UserError(f"{file}: {error}") from None
    except KeyError as error:
        raise UserError(
            f"{file} has no {error.args[0]!r} field; restore the file from the original download."
        ) from None
    except (TypeError, ValueError) as error:
        raise UserError(
            f"{file} has a value llm_rl cannot read ({error}); restore it from the original download."
        ) from None


def load_model(path: str | Path, dtype: torch.dtype | None = None, device: torch.device | str = "cpu") -> Transformer:
    """The transformer in a Hugging Face directory; dtype None keeps the stored one (bfloat16 for most checkpoints)."""
    path = Path(path)
    generation = read_json(path / "generation_config.json") if (path / "generation_config.json").is_file() else None
    cfg = read_config(path, generation)
    weights = read_weights(path, device)
    weights = {name: w for name, w in weights.items() if not name.endswith("rotary_emb.inv_freq")}  # old files
    if cfg.tie_word_embeddings and "model.embed_tokens.weight" in weights:  # tied: the embedding is the output layer
        weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
    with torch.device("meta"):  # no memory or random init for weights about to be replaced
        model = Transformer(cfg)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        raise UserError(
            f"weights in {path} do not match config.json (missing {missing[:3]}, unexpected {unexpected[:3]}); "
            "check that the directory holds one complete checkpoint."
        )
    try:
        model.load_state_dict({n: w.to(dtype) if dtype else w for n, w in weights.items()}, strict=True, assign=True)
    except RuntimeError as error:
        raise UserError(f"weights in {path} do not fit config.json: {error}".rstrip(".") + ".") from None
    model.tie_weights()
    return model


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The fast tokenizer in `path/tokenizer.json`."""
    from tokenizers import Tokenizer

    file = Path(path) / "tokenizer.json"
    if not file.is_file():
        raise UserError(
            f"{file} is missing; save the tokenizer with transformers' AutoTokenizer.save_pretrained (fast tokenizer)."
        )
    try:
        return Tokenizer.from_file(str(file))
    except Exception as error:  # tokenizers raises a bare Exception ("Model missing" for `{}`)
        raise UserError(
            f"{file} is not a tokenizer `tokenizers` can read ({one_line(error)}); restore it from the original "
            "download or save it again with transformers' AutoTokenizer.save_pretrained (fast tokenizer)."
        ) from None


def load_pretrained(
    path: str | Path, dtype: torch.dtype | None = None, device: torch.device | str = "cpu"
) -> tuple[Transformer, Tokenizer]:
    """(model, tokenizer) from a local Hugging Face directory of a LlamaForCausalLM or Qwen2ForCausalLM."""
    return load_model(path, dtype, device), load_tokenizer(path)


def save_pretrained(
    model: Transformer, tokenizer: Tokenizer | None, path: str | Path, source: str | Path | None = None
) -> Path:
    """Writes config.json, model.safetensors (atomically), tokenizer.json and the small tokenizer/generation configs.

    `source` is the directory the model was loaded from: its tokenizer_config.json (with the chat template),
    special_tokens_map.json and generation_config.json are copied instead of written from scratch.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = model.cfg
    weights = {name: w.detach().to("cpu").contiguous() for name, w in model.state_dict().items()}
    if cfg.tie_word_embeddings:
        del weights["lm_head.weight"]  # the same tensor as the embedding; safetensors refuses shared storage
    fd, tmp = tempfile.mkstemp(dir=path, prefix=f".{WEIGHTS_FILE}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(weights, tmp, metadata={"format": "pt"})
        os.replace(tmp, path / WEIGHTS_FILE)
    finally:
        Path(tmp).unlink(missing_ok=True)
    atomic_write_json(path / "config.json", hf_config(cfg, model.dtype))
    copied = set()
    if source is not None and Path(source).resolve() != path.resolve():
        for name in COMPANION_FILES:
            if (Path(source) / name).is_file():
                shutil.copyfile(Path(source) / name, path / name)
                copied.add(name)
    if tokenizer is not None:
        atomic_write_bytes(path / "tokenizer.json", tokenizer.to_str().encode())
        if "tokenizer_config.json" not in copied:
            atomic_write_json(path / "tokenizer_config.json", tokenizer_config(cfg, tokenizer))
    if "generation_config.json" not in copied and cfg.eos_token_ids:
        generation = {"bos_token_id": cfg.bos_token_id, "eos_token_id": list(cfg.eos_token_ids)}
        atomic_write_json(path / "generation_config.json", generation)
    return path


def tokenizer_config(cfg: ModelConfig, tokenizer: Tokenizer) -> dict[str, Any]:
    """The least transformers' AutoTokenizer needs to wrap tokenizer.json, with the bos/eos tokens named."""
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": cfg.max_position_embeddings,
    }
    if cfg.bos_token_id is not None:
        config["bos_token"] = tokenizer.id_to_token(cfg.bos_token_id)
    if cfg.eos_token_ids:
        config["eos_token"] = tokenizer.id_to_token(cfg.eos_token_ids[0])
    return config
