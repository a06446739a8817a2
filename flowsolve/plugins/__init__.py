"""Layer 9, plugins: the hook specifications, the registry fed by the ``flowsolve`` entry-point
group, and the built-in plugin registered through that same group."""
