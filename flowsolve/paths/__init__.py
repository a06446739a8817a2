"""Layer 4, Gaussian paths: schedulers (``alpha_t``, ``sigma_t``), named time grids, and
rescheduling a model from one path to another."""
