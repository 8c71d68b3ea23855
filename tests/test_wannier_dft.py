"""Berry-phase Wannier centres from periodic PySCF vs molecular Foster-Boys centres.

Like with like: the same GTH basis and pseudopotential in both codes, for NH3 and
an (NH3)2 cluster in cubic boxes. Each system costs two DFT calculations.

The periodic SCF runs at a plane-wave cutoff of 100 hartree (KE_CUTOFF) instead of
PySCF's default for GTH-DZVP (~610 hartree, a 211^3 mesh in the 10 A box, ~5 GB and
~10 min for both systems): the centres do not depend on it. Largest deviation of the
order-2 centres from the Boys centres (one-off runs): NH3 in 10 A 0.00091 A at 100, 150
and 250 hartree, 0.0009 A at the default (models/README.md); (NH3)2 in 11 A 0.00095 A
at 100 and 250 hartree; order 1: 0.0094 / 0.0063 A. The checks still fail for a wrong
estimator at this cutoff (one-off run): order 1 alone (0.0094 A, dipole 6.6% off),
the Richardson step with the wrong sign (0.020 A) or weight 1/2 (0.0044 A), the 2G
phase alone (0.040 A), equal weights on G and 2G in the functional (0.0041 A), no localization
(0.56 A); the (NH3)2 numbers are alike.
"""

import numpy as np
import pytest
from ase.build import molecule
from scipy.optimize import linear_sum_assignment

from legato.units import BOHR_IN_ANGSTROM

VALENCE = {"N": 5, "H": 1}
KE_CUTOFF = 100.0  # hartree, periodic SCF (see the module docstring)

pytestmark = pytest.mark.slow  # four SCFs, ~30 s on 2 cores


def _nh3_dimer():
    """Two NH3 3.3 A apart, turned against each other with no symmetry left (a net dipole)."""
    first, second = molecule("NH3"), molecule("NH3")
    second.rotate(150, "x")
    second.rotate(40, "z")
    second.positions += [0.4, 0.2, 3.3]
    return first + second


SYSTEMS = {"NH3": (molecule, 10.0), "(NH3)2": (_nh3_dimer, 11.0)}  # builder, box edge (A)


def _boys_centres(mol, occupied, n_starts=4):
    """Foster-Boys centres (A), the most localized of several random starts."""
    from pyscf import lo

    r = mol.intor("int1e_r")
    r2 = mol.intor("int1e_r2")
    n = occupied.shape[1]
    best = None
    for seed in range(n_starts):
        q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
        boys = lo.Boys(mol, occupied @ q)
        boys.conv_tol = 1e-12
        boys.init_guess = None
        loc = boys.kernel()
        c = np.einsum("mi,xmn,ni->ix", loc, r, loc)
        spread = np.sum(np.einsum("mi,mn,ni->i", loc, r2, loc) - (c**2).sum(1))
        if best is None or spread < best[0]:
            best = (spread, c * BOHR_IN_ANGSTROM)
    return best[1]


@pytest.fixture(scope="module", params=list(SYSTEMS))
def both_ways(request):
    """(atoms, {order: periodic centres}, Boys centres, SCF dipole e*A) for one system."""
    from pyscf import dft, gto
    from pyscf.pbc import dft as pdft
    from pyscf.pbc import gto as pgto

    from legato.training.wannier import wannier_centres

    build, box = SYSTEMS[request.param]
    atoms = build("NH3") if build is molecule else build()
    atoms.positions += box / 2 - atoms.get_center_of_mass()
    atom = list(zip(atoms.get_chemical_symbols(), atoms.positions))
    cell = pgto.Cell(atom=atom, a=np.eye(3) * box, basis="gth-dzvp", pseudo="gth-pbe", unit="A", verbose=0)
    cell.ke_cutoff = KE_CUTOFF
    cell.build()
    mf = pdft.RKS(cell, xc="pbe").multigrid_numint()
    mf.conv_tol = 1e-9
    mf.kernel()
    periodic = {}
    for order in (1, 2):
        centres = wannier_centres(cell, mf.mo_coeff[:, mf.mo_occ > 0], order) * BOHR_IN_ANGSTROM
        periodic[order] = centres - box * np.round((centres - box / 2) / box)  # the images nearest the cluster

    mol = gto.M(atom=atom, basis="gth-dzvp", pseudo="gth-pbe", unit="A", verbose=0)
    mmf = dft.RKS(mol, xc="pbe")
    mmf.conv_tol = 1e-9
    mmf.kernel()
    boys = _boys_centres(mol, mmf.mo_coeff[:, mmf.mo_occ > 0])
    scf_dipole = mmf.dip_moment(unit="AU", verbose=0) * BOHR_IN_ANGSTROM
    return atoms, periodic, boys, scf_dipole


def _matched_deviation(a, b):
    d = np.linalg.norm(a[:, None] - b[None], axis=-1)
    rows, cols = linear_sum_assignment(d)
    return d[rows, cols].max()


def _dipole(atoms, centres):
    charges = np.array([VALENCE[s] for s in atoms.get_chemical_symbols()])
    return charges @ atoms.positions - 2 * centres.sum(axis=0)


def test_extrapolated_centres_match_boys_centres(both_ways):
    _, periodic, boys, _ = both_ways
    assert _matched_deviation(periodic[2], boys) < 0.002  # A, the target of issue 5


def test_first_order_centres_are_off_by_the_finite_box_term(both_ways):
    """Order 1 (Resta/Silvestrelli) is off by O(1/L^2): close, but well outside what order 2 reaches."""
    _, periodic, boys, _ = both_ways
    first, second = _matched_deviation(periodic[1], boys), _matched_deviation(periodic[2], boys)
    assert first < 0.015
    assert second < first / 3


def test_boys_centres_give_the_scf_dipole(both_ways):
    atoms, _, boys, scf_dipole = both_ways
    assert np.abs(_dipole(atoms, boys) - scf_dipole).max() < 1e-3  # e*A


def test_dipole_from_periodic_centres_matches_the_scf_dipole(both_ways):
    atoms, periodic, _, scf_dipole = both_ways
    error = np.linalg.norm(_dipole(atoms, periodic[2]) - scf_dipole)
    assert error < 0.02 * np.linalg.norm(scf_dipole)  # order 1 is ~6% off for NH3 in 10 A


def test_centres_assign_to_nitrogen_and_sit_toward_the_hydrogens(both_ways):
    from legato.training.wannier import assign_centres

    atoms, periodic, _, _ = both_ways
    owners = np.array([s != "H" for s in atoms.get_chemical_symbols()])
    box = np.eye(3) * 30.0  # the centres are already the images nearest the cluster
    disp, count = assign_centres(atoms.positions, periodic[2], box, owners)
    assert list(count[owners]) == [4] * owners.sum() and count[~owners].sum() == 0
    for n in np.flatnonzero(owners):
        hydrogens = atoms.positions[n + 1 : n + 4]  # ase's NH3: N first, then its 3 H
        toward_h = hydrogens.mean(axis=0) - atoms.positions[n]
        assert 0.07 < np.linalg.norm(disp[n]) < 0.12  # centroid 0.09-0.10 A from N ...
        assert disp[n] @ toward_h > 0.95 * np.linalg.norm(disp[n]) * np.linalg.norm(toward_h)  # ... along the C3 axis, toward the H
