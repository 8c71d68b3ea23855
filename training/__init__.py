"""Data sets, the Allegro + Wannier model, SAM training and DFT labelling."""
