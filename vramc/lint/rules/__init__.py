"""Lint rules, one module per area: load (0xx-2xx, raised while loading), memory (3xx),
settings (3xx, sanity of the settings against the model), engines (4xx, what each engine accepts)."""
