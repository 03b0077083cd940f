"""Training: the embedded model's training loop (cem_lab.training.embedded_training)."""
