"""Reinforcement learning on transformer language models (to come: see the llm_rl issues)."""
