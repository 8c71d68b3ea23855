"""The one place where units are converted and physical constants are defined.

i-PI speaks atomic units on its socket (bohr, hartree, hartree/bohr, e*bohr).
Data sets and models use ASE units (Angstrom, eV, eV/Angstrom, e*Angstrom).
The socket conversions use :mod:`ase.units` (CODATA 2014) on both sides of the
driver, so they agree; files that i-PI writes are read back with i-PI's own
factors (:func:`ipi_to_angstrom`, :func:`ipi_velocity_to_angstrom_per_fs`).
"""

from ase import units as _ase
from scipy.constants import physical_constants as _codata

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
#: molecules per mole
AVOGADRO: float = _ase._Nav
#: hbar^2 / (2 * 1 amu) in meV A^2 (recoil energy of a 1 amu nucleus per Q^2)
HBAR2_2AMU_MEV_A2: float = _ase._hbar**2 / (2 * _ase._amu) / _ase._e * 1e3 * 1e20
#: neutron energy per k^2: E (meV) = NEUTRON_E_K2 * k^2 (1/A); ASE has no neutron mass, scipy's CODATA does
NEUTRON_E_K2: float = HBAR2_2AMU_MEV_A2 / _codata["neutron mass in u"][0]


def deuterium_mass_amu() -> float:
    """Mass of D in amu, from i-PI's element table (ASE's lists only H)."""
    from ipi.utils.units import Elements, unit_to_user

    return unit_to_user("mass", "dalton", Elements.mass("D"))


def _quiet():
    """i-PI prints its unit table before raising on an unknown unit: keep it off stdout."""
    import contextlib
    import io

    return contextlib.redirect_stdout(io.StringIO())


def ipi_to_angstrom(unit: str) -> float:
    """Factor from an i-PI length unit (``atomic_unit``, ``angstrom``, ...) to Angstrom; ValueError if i-PI knows none."""
    from ipi.utils.units import unit_to_internal, unit_to_user

    try:
        with _quiet():
            return unit_to_user("length", "angstrom", unit_to_internal("length", unit, 1.0))
    except (TypeError, ValueError, IndexError):
        raise ValueError(f"length unit '{unit}' is not an i-PI unit") from None


def ipi_velocity_to_angstrom_per_fs(unit: str) -> float:
    """Factor from an i-PI velocity unit (``atomic_unit``, ``m/s``, ...) to Angstrom/fs; ValueError if i-PI knows none."""
    from ipi.utils.units import unit_to_internal, unit_to_user

    try:
        with _quiet():
            internal = unit_to_internal("velocity", unit, 1.0)  # bohr per atomic unit of time
    except (TypeError, ValueError, IndexError):
        raise ValueError(f"velocity unit '{unit}' is not an i-PI unit") from None
    return internal * unit_to_user("length", "angstrom", 1.0) / unit_to_user("time", "femtosecond", 1.0)


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
