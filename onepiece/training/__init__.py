"""Training: candidate groups, batches, the progressive multi-task loop, checkpoints."""
