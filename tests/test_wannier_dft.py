"""Berry-phase Wannier centres from periodic PySCF vs molecular Foster-Boys centres.

Like with like: the same GTH basis and pseudopotential in both codes, NH3 in a
10 A cubic box. This runs two DFT calculations (about a minute or two on 2 cores).
"""

import numpy as np
import pytest
from ase.build import molecule
from scipy.optimize import linear_sum_assignment

from legato.units import BOHR_IN_ANGSTROM

BOX = 10.0


@pytest.fixture(scope="module")
def nh3_both_ways():
    from pyscf import dft, gto, lo
    from pyscf.pbc import dft as pdft
    from pyscf.pbc import gto as pgto

    from legato.training.wannier import wannier_centres

    nh3 = molecule("NH3")
    nh3.positions += BOX / 2 - nh3.get_center_of_mass()
    atom = list(zip(nh3.get_chemical_symbols(), nh3.positions))
    cell = pgto.Cell(atom=atom, a=np.eye(3) * BOX, basis="gth-dzvp", pseudo="gth-pbe", unit="A", verbose=0)
    cell.build()
    mf = pdft.RKS(cell, xc="pbe").multigrid_numint()
    mf.conv_tol = 1e-10
    mf.kernel()
    centres = wannier_centres(cell, mf.mo_coeff[:, mf.mo_occ > 0]) * BOHR_IN_ANGSTROM
    centres -= BOX * np.round((centres - BOX / 2) / BOX)  # the images nearest the molecule

    mol = gto.M(atom=atom, basis="gth-dzvp", pseudo="gth-pbe", unit="A", verbose=0)
    mmf = dft.RKS(mol, xc="pbe")
    mmf.conv_tol = 1e-10
    mmf.kernel()
    occupied = mmf.mo_coeff[:, mmf.mo_occ > 0]
    r = mol.intor("int1e_r")
    best = None
    for seed in range(4):  # Boys from random starts: keep the most localized
        q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(4, 4)))
        boys = lo.Boys(mol, occupied @ q)
        boys.conv_tol = 1e-12
        boys.init_guess = None
        loc = boys.kernel()
        c = np.einsum("mi,xmn,ni->ix", loc, r, loc)
        spread = sum(np.einsum("mi,mn,ni->i", loc, mol.intor("int1e_r2"), loc) - (c**2).sum(1))
        if best is None or spread < best[0]:
            best = (spread, c * BOHR_IN_ANGSTROM)
    return nh3, centres, best[1], None


def test_periodic_centres_match_molecular_boys_centres(nh3_both_ways):
    _, periodic, boys, _ = nh3_both_ways
    d = np.linalg.norm(periodic[:, None] - boys[None], axis=-1)
    rows, cols = linear_sum_assignment(d)
    assert d[rows, cols].max() < 0.01  # A


def test_centres_assign_to_nitrogen_and_sit_toward_the_hydrogens(nh3_both_ways):
    from legato.training.wannier import assign_centres

    nh3, periodic, _, _ = nh3_both_ways
    owners = np.array([s != "H" for s in nh3.get_chemical_symbols()])
    disp, count = assign_centres(nh3.positions, periodic, np.eye(3) * BOX, owners)
    assert list(count) == [4, 0, 0, 0]
    assert 0.07 < np.linalg.norm(disp[0]) < 0.12  # centroid 0.09-0.10 A from N ...
    toward_h = nh3.positions[1:].mean(axis=0) - nh3.positions[0]
    assert disp[0] @ toward_h > 0.95 * np.linalg.norm(disp[0]) * np.linalg.norm(toward_h)  # ... along the C3 axis, toward the H
