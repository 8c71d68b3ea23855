"""legato-pimd: path-integral MD driven by SAM-trained Allegro potentials.

Imports go one way (pyproject.toml [tool.importlinter]; bin/lint-imports):

* :mod:`legato.cli`, the `legato` command, on top;
* the stages, which never import each other: :mod:`legato.training` (structures, DFT
  labels, SAM training, test errors), :mod:`legato.driver` (i-PI runs and their driver),
  :mod:`legato.analysis` (spectra, nuclear quantum effects, robustness);
* the core every stage uses: units, files (i-PI, extxyz), geometry, the labelled data
  set, the model, its file and inference (``ModelPotential``, ``LegatoCalculator``),
  and the shipped files.
"""

__version__ = "0.1.0"
