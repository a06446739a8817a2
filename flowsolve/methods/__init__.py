"""Layer 2, base methods: explicit Runge--Kutta solvers (one tableau constant each) that step a
velocity field on a uniform grid. Depends on :mod:`flowsolve.core` only."""
