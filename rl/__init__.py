"""The shared core: rollouts, run logging, checkpoints, configs, seeding and the CLI."""
