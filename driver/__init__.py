"""Running models: the i-PI socket driver (forces and per-bead dipoles), `legato run` and the demo's runs."""
