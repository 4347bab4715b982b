"""Training, checkpoints and batched inference shared by train/eval/bench."""
