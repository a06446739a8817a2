"""flowsolve's solver conformance suite (installed as ``flowsolve.conformance``)."""
