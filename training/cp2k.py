"""Gamma-point labels from CP2K (Quickstep GPW), the same method as the PySCF path.

CP2K is not a Python package, so it runs as a program (``cp2k.psmp`` from the
Debian/Ubuntu package ``cp2k``, or ``$LEGATO_CP2K``) on an input written here;
ASE's ``CP2K`` calculator needs ``cp2k_shell`` and does not return Wannier
centres, hence this small runner. Same GTH basis and pseudopotentials, PBE,
D3(BJ) with pyscf-dispersion's two-body cutoff and no three-body term, and
Berry-phase (Resta) Wannier centres, i.e. the PySCF path's ``wannier_order 1``.
Measured beside PySCF (docs/convergence.md): forces within 1-3 meV/A and
relative energies within 0.01 meV/atom at ``CUTOFF 800``, 3-4x faster.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import ase
import numpy as np

from legato.units import FORCE_AU_IN_EV_PER_ANGSTROM, HARTREE_IN_EV

EXECUTABLES = ("cp2k.psmp", "cp2k.ssmp", "cp2k.popt", "cp2k.sopt", "cp2k")
#: PySCF basis / pseudopotential names -> CP2K's aliases in GTH_BASIS_SETS / GTH_POTENTIALS
BASIS = {"gth-szv": "SZV-GTH", "gth-dzv": "DZV-GTH", "gth-dzvp": "DZVP-GTH", "gth-tzvp": "TZVP-GTH", "gth-tzv2p": "TZV2P-GTH", "gth-qzv2p": "QZV2P-GTH", "gth-qzv3p": "QZV3P-GTH"}
PSEUDO = {"gth-pbe": "GTH-PBE", "gth-blyp": "GTH-BLYP", "gth-bp": "GTH-BP", "gth-pade": "GTH-PADE", "gth-lda": "GTH-PADE"}
D3 = {"d3bj": "DFTD3(BJ)", "d3zero": "DFTD3"}

INPUT = """&GLOBAL
  PROJECT label
  RUN_TYPE ENERGY_FORCE
  PRINT_LEVEL MEDIUM
&END GLOBAL
&FORCE_EVAL
  METHOD QUICKSTEP
  &DFT
    BASIS_SET_FILE_NAME GTH_BASIS_SETS
    POTENTIAL_FILE_NAME GTH_POTENTIALS
    CHARGE 0
    MULTIPLICITY 1
    &MGRID
      CUTOFF {cutoff}
      REL_CUTOFF 60
      NGRIDS 4
    &END MGRID
    &QS
      METHOD GPW
      EPS_DEFAULT 1.0E-12
    &END QS
    &SCF
      SCF_GUESS ATOMIC
      EPS_SCF 1.0E-7
      MAX_SCF {max_cycle}
      ADDED_MOS 10
      &DIAGONALIZATION
        ALGORITHM STANDARD
      &END DIAGONALIZATION
      &MIXING
        METHOD BROYDEN_MIXING
        ALPHA 0.4
        NBROYDEN 8
      &END MIXING
      &OUTER_SCF
        EPS_SCF 1.0E-7
        MAX_SCF 10
      &END OUTER_SCF
      &PRINT
        &RESTART OFF
        &END RESTART
      &END PRINT
    &END SCF
    &XC
      &XC_FUNCTIONAL {xc}
      &END XC_FUNCTIONAL
{dispersion}    &END XC
    &LOCALIZE
      METHOD JACOBI
      OPERATOR BERRY
      EPS_LOCALIZATION 1.0E-8
      MAX_ITER 20000
      &PRINT
        &WANNIER_CENTERS
          IONS+CENTERS .TRUE.
          FILENAME =wannier.xyz
        &END WANNIER_CENTERS
      &END PRINT
    &END LOCALIZE
  &END DFT
  &SUBSYS
    &CELL
      A {a[0]:.10f} {a[1]:.10f} {a[2]:.10f}
      B {b[0]:.10f} {b[1]:.10f} {b[2]:.10f}
      C {c[0]:.10f} {c[1]:.10f} {c[2]:.10f}
      PERIODIC XYZ
    &END CELL
    &COORD
{coords}
    &END COORD
{kinds}  &END SUBSYS
  &PRINT
    &FORCES ON
    &END FORCES
  &END PRINT
&END FORCE_EVAL
"""

DISPERSION = """      &VDW_POTENTIAL
        POTENTIAL_TYPE PAIR_POTENTIAL
        &PAIR_POTENTIAL
          TYPE {kind}
          PARAMETER_FILE_NAME dftd3.dat
          REFERENCE_FUNCTIONAL {xc}
          R_CUTOFF 31.75
          CALCULATE_C9_TERM .FALSE.
        &END PAIR_POTENTIAL
      &END VDW_POTENTIAL
"""


def executable() -> str | None:
    """The CP2K program to run: ``$LEGATO_CP2K``, else the first of EXECUTABLES on PATH."""
    if os.environ.get("LEGATO_CP2K"):
        return shutil.which(os.environ["LEGATO_CP2K"])
    return next((shutil.which(name) for name in EXECUTABLES if shutil.which(name)), None)


def check(xc: str, basis: str, pseudo: str, dispersion: str | None) -> None:
    """One-line ValueError for settings this runner cannot give CP2K."""
    if executable() is None:
        raise ValueError("--code cp2k: no CP2K program found (install the cp2k package, e.g. `apt install cp2k`, or set LEGATO_CP2K); or use --code pyscf")
    for option, value, table in (("basis", basis, BASIS), ("pseudo", pseudo, PSEUDO)):
        if value not in table:
            raise ValueError(f"--{option} {value}: --code cp2k knows {', '.join(sorted(table))}")
    if dispersion and dispersion not in D3:
        raise ValueError(f"--dispersion {dispersion}: --code cp2k knows {', '.join(sorted(D3))} or none")


def write_input(atoms: ase.Atoms, xc: str, basis: str, pseudo: str, dispersion: str | None, valence: dict, cutoff: float, max_cycle: int) -> str:
    """CP2K input text for one Gamma-point energy, forces and Wannier centres (A, eV)."""
    a, b, c = atoms.cell.array
    coords = "\n".join(f"      {s} {x:.10f} {y:.10f} {z:.10f}" for s, (x, y, z) in zip(atoms.get_chemical_symbols(), atoms.positions))
    kinds = "".join(
        f"    &KIND {s}\n      BASIS_SET {BASIS[basis]}-q{valence[s]}\n      POTENTIAL {PSEUDO[pseudo]}-q{valence[s]}\n    &END KIND\n"
        for s in sorted(set(atoms.get_chemical_symbols()))
    )
    d3 = DISPERSION.format(kind=D3[dispersion], xc=xc.upper()) if dispersion else ""
    return INPUT.format(cutoff=f"{cutoff:g}", max_cycle=max_cycle, xc=xc.upper(), dispersion=d3, a=a, b=b, c=c, coords=coords, kinds=kinds)


def parse_output(log: str, wannier: str) -> tuple[float, np.ndarray, np.ndarray, int]:
    """Energy (eV), forces (eV/A), Wannier centres (A) and SCF steps from CP2K's output files."""
    if "SCF run converged" not in log:
        raise RuntimeError("CP2K: SCF not converged")
    energy = float(re.findall(r"ENERGY\| Total FORCE_EVAL \( QS \) energy \[a\.u\.\]:\s+(\S+)", log)[-1]) * HARTREE_IN_EV
    block = log.split("ATOMIC FORCES in [a.u.]")[-1].split("SUM OF ATOMIC FORCES")[0]
    rows = [line.split() for line in block.splitlines() if re.match(r"\s+\d+\s+\d+\s+\w+\s+\S+", line)]
    forces = np.array([[float(x) for x in row[3:6]] for row in rows]) * FORCE_AU_IN_EV_PER_ANGSTROM
    lines = wannier.splitlines()
    n = int(lines[0])
    centres = np.array([[float(x) for x in row.split()[1:4]] for row in lines[2 : 2 + n] if row.split()[0] == "X"])
    steps = sum(int(x) for x in re.findall(r"SCF run converged in\s+(\d+) steps", log))
    return energy, forces, centres, steps


def run(atoms: ase.Atoms, xc: str, basis: str, pseudo: str, dispersion: str | None, valence: dict, cutoff: float = 800.0, max_cycle: int = 60):
    """Run CP2K on ``atoms`` in a scratch folder; returns (energy eV, forces eV/A, centres A, SCF steps, version)."""
    program = executable()
    if program is None:
        raise ValueError("no CP2K program found (apt install cp2k, or set LEGATO_CP2K)")
    with tempfile.TemporaryDirectory(prefix="legato-cp2k-") as scratch:
        work = Path(scratch)
        (work / "label.inp").write_text(write_input(atoms, xc, basis, pseudo, dispersion, valence, cutoff, max_cycle))
        done = subprocess.run([program, "-i", "label.inp", "-o", "label.log"], cwd=work, capture_output=True, text=True)
        log = (work / "label.log").read_text() if (work / "label.log").exists() else ""
        if done.returncode != 0 or not (work / "label-wannier.xyz").exists() and not (work / "wannier.xyz").exists():
            tail = (log or done.stderr).strip().splitlines()[-3:]
            raise RuntimeError(f"CP2K failed (exit {done.returncode}): {' / '.join(tail)}")
        wannier_file = work / "wannier.xyz" if (work / "wannier.xyz").exists() else work / "label-wannier.xyz"
        energy, forces, centres, steps = parse_output(log, wannier_file.read_text())
        version = re.search(r"CP2K\| version string:\s+(.+)", log)
    return energy, forces, centres, steps, (version.group(1).strip() if version else "CP2K")
