"""The one place where units are converted.

i-PI speaks atomic units on its socket (bohr, hartree, hartree/bohr, e*bohr).
Data sets and models use ASE units (Angstrom, eV, eV/Angstrom, e*Angstrom).
All numbers come from :mod:`ase.units` (CODATA 2014), so the two sides agree.
"""

from ase import units as _ase

BOHR_IN_ANGSTROM: float = _ase.Bohr
HARTREE_IN_EV: float = _ase.Hartree
FORCE_AU_IN_EV_PER_ANGSTROM: float = HARTREE_IN_EV / BOHR_IN_ANGSTROM
KB_EV_PER_K: float = _ase.kB
HBAR_EV_S: float = _ase._hbar / _ase._e
#: speed of light in cm/s, for wavenumbers
C_CM_PER_S: float = _ase._c * 100.0
#: 1 cm^-1 in meV
INVCM_IN_MEV: float = 1e3 * _ase.invcm
FS_IN_SECONDS: float = 1e-15
#: i-PI's atomic unit of time in femtoseconds
AU_TIME_IN_FS: float = _ase._hbar / (_ase._me * (_ase._e**2 / (4 * 3.141592653589793 * _ase._eps0) / _ase._hbar) ** 2) * 1e15


def angstrom_to_bohr(x):
    return x / BOHR_IN_ANGSTROM


def bohr_to_angstrom(x):
    return x * BOHR_IN_ANGSTROM


def ev_to_hartree(x):
    return x / HARTREE_IN_EV


def forces_ev_per_angstrom_to_au(f):
    return f / FORCE_AU_IN_EV_PER_ANGSTROM


def dipole_eangstrom_to_au(mu):
    """Dipole e*Angstrom -> e*bohr."""
    return mu / BOHR_IN_ANGSTROM
