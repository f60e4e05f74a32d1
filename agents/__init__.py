"""One algorithm family per module, from dynamic programming to policy gradients."""
