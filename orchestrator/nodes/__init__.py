"""Graph nodes: small async functions of (state, runtime)."""
