"""Layer 1, the core: Butcher tableaux, the node grid, the generic Runge--Kutta step, velocity
field calls and checks, fingerprints and the atomic file writer. Imports nothing else of flowsolve."""
