"""Reinforcement learning on transformer language models: the model, its Hugging Face I/O and the sampler."""

from llm_rl.hf_io import load_pretrained, save_pretrained

__all__ = ["load_pretrained", "save_pretrained"]
