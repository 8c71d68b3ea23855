"""The converged DFT protocol (docs/convergence.md): `legato label`'s defaults.

Kept free of heavy imports so the CLI can show them in ``--help``.
"""

#: GTH-TZV2P (GTH-DZVP forces are ~0.24 eV/A off on thermal frames), the Gamma point of
#: cells at least 10 A across (a 2x2x2 k-mesh of the 5.1 A phase-I cell), Berry-phase
#: Wannier centres of order 1 (what CP2K gives, so labels do not depend on the code), and
#: CP2K where it is installed (same labels as PySCF, 3-4x faster), else PySCF.
CONVERGED = {"basis": "gth-tzv2p", "min_cell_length": 10.0, "wannier_order": 1, "code": "auto"}
