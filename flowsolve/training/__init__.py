"""Layer 7, training: ground truth (dopri5), the trajectory store, losses and metrics, ``fit``,
evaluation against baselines, torch.distributed and progress reporting."""
