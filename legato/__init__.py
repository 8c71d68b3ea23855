"""legato-pimd: path-integral MD driven by SAM-trained Allegro potentials.

Sub-packages: :mod:`legato.training` (data, model, SAM training, DFT labels),
:mod:`legato.driver` (i-PI socket client), :mod:`legato.analysis` (spectra).
"""

__version__ = "0.1.0"
