"""Route modules of the server; each exposes ``router``."""
