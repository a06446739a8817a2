"""Layer 3, solvers: transforms, the parametric (transform x base) solver, multistep and
non-stationary solvers, solver families and ``compose``."""
