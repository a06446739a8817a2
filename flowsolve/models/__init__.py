"""Layer 5, models: adapters from eps / x / v predictions and EDM denoisers to velocity fields,
classifier-free guidance, the exact Gaussian-mixture flow and the bundled zoo."""
