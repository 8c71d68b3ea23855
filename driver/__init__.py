"""i-PI socket driver: serves a legato model's forces and per-bead dipoles."""
