"""``python -m tlcore …``: the headless face of the same core (JSON on stdout)."""
