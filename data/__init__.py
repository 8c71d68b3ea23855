"""Data sets; the held-out test frames ship with legato as ``legato.data`` (see legato.shipped)."""
