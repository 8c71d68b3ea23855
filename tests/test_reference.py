"""The converged reference: Brillouin-zone sampling by supercells in `legato label`."""

import ase
import numpy as np
import pytest

from legato.training import label as label_module
from legato.dataset import DatasetError, validate_frames


@pytest.mark.parametrize(
    "cell, length, repeat",
    [
        (np.eye(3) * 5.13, 10.0, (2, 2, 2)),  # phase I -> the 128-atom supercell
        (np.eye(3) * 5.13, 10.3, (3, 3, 3)),
        (np.diag([5.0, 7.0, 12.0]), 10.0, (2, 2, 1)),
        (np.eye(3) * 6.93, 0.0, (1, 1, 1)),  # 0: the frame's own cell
        # hexagonal a = 5: the planes of a and b lie a*sin(60) = 4.33 A apart, not 5
        (np.array([[5.0, 0, 0], [-2.5, 2.5 * np.sqrt(3), 0], [0, 0, 9.0]]), 9.0, (3, 3, 1)),
    ],
)
def test_supercell_reaches_the_length_between_every_pair_of_faces(cell, length, repeat):
    assert label_module.supercell_repeat(cell, length) == repeat


@pytest.mark.slow  # four SCFs of 4-8 atoms
def test_supercell_labels_are_the_frames_own_gradient():
    """Labelled in a 2x1x1 supercell: the frame's energy is the supercell's per image, and its
    forces are minus the gradient of that energy (a central difference moves every image).

    At a 300 hartree plane-wave cutoff instead of PySCF's default for GTH-DZVP (~610), a
    quarter of the cost: the two images still agree to 0.9 meV/A (1.1 at the default; one-off
    runs), while at 100 hartree the grid is too coarse and they differ by 79 meV/A."""
    from ase.build import molecule

    nh3 = molecule("NH3")
    nh3.cell, nh3.pbc = [4.0, 6.0, 6.0], True
    nh3.center()
    nh3.rattle(0.05, seed=1)
    settings = label_module.DFTSettings(wannier_order=1, min_cell_length=5.0, ke_cutoff=300.0)
    labelled = label_module.label_frame(nh3, settings)
    assert labelled.info["supercell"] == "2x1x1" and len(labelled) == 4
    assert labelled.info["min_cell_length"] == 5.0
    explicit = label_module.label_frame(nh3.repeat((2, 1, 1)), label_module.DFTSettings(wannier_order=1, ke_cutoff=300.0))
    images = explicit.arrays["forces"].reshape(2, 4, 3)
    # both images feel the same forces, to the ~1 meV/A noise of PySCF's multigrid integration
    # (seen: 1.1 meV/A), far below the eV/A of a wrong image or the 15 meV/A protocol target
    np.testing.assert_allclose(images[1], images[0], atol=3e-3)
    # two SCFs converged to 1e-8 hartree agree to ~1e-4 eV/A in forces, not to round-off
    assert labelled.info["energy"] == pytest.approx(explicit.info["energy"] / 2, abs=1e-5)
    np.testing.assert_allclose(labelled.arrays["forces"], images[0], atol=3e-3)
    # the frame's dipole: that of one image (the supercell's is twice it, Wannier data per atom alike)
    np.testing.assert_allclose(labelled.info["dipole"], np.asarray(explicit.info["dipole"]) / 2, atol=1e-3)

    forces = labelled.arrays["forces"]
    direction = np.random.default_rng(0).normal(size=forces.shape)
    direction /= np.linalg.norm(direction)
    h = 0.01  # A
    energies = []
    for sign in (1, -1):
        moved = nh3.copy()
        moved.positions += sign * h * direction
        energies.append(label_module.label_frame(moved, settings).info["energy"])
    slope = -(energies[0] - energies[1]) / (2 * h)
    assert abs(np.sum(forces * direction)) > 0.1
    assert slope == pytest.approx(np.sum(forces * direction), abs=0.003)


def _labelled(min_cell_length):
    atoms = ase.Atoms("H2", [[0, 0, 0], [0, 0, 0.74]], cell=[5, 5, 5], pbc=True)
    atoms.info.update(energy=-1.0, method="PBE-D3BJ", basis="gth-dzvp", pseudo="gth-pbe", wannier_order=2, min_cell_length=min_cell_length)
    atoms.arrays["forces"] = np.zeros((2, 3))
    atoms.arrays["wannier_disp"] = np.zeros((2, 3))
    atoms.arrays["wannier_count"] = np.array([1, 0])
    atoms.arrays["valence_charge"] = np.array([1, 1])
    return atoms


def test_one_data_set_holds_one_sampling_protocol():
    validate_frames([_labelled(10.0), _labelled(10.0)])
    with pytest.raises(DatasetError, match="min_cell_length"):
        validate_frames([_labelled(10.0), _labelled(0.0)])
    old = _labelled(0.0)
    del old.info["min_cell_length"]  # frames labelled before the option: Gamma of their own cell
    validate_frames([old, _labelled(0.0)])


def test_negative_cell_length_is_refused_before_any_frame():
    with pytest.raises(ValueError, match="--min-cell-length"):
        label_module.DFTSettings(min_cell_length=-1).check({"H"})


def test_cp2k_input_carries_the_labellers_method():
    from ase.build import molecule

    from legato.training import cp2k

    nh3 = molecule("NH3")
    nh3.cell, nh3.pbc = [6.0, 6.0, 6.0], True
    text = cp2k.write_input(nh3, "pbe", "gth-dzvp", "gth-pbe", "d3bj", {"N": 5, "H": 1}, 800, 60)
    for line in ("BASIS_SET DZVP-GTH-q5", "POTENTIAL GTH-PBE-q5", "BASIS_SET DZVP-GTH-q1", "POTENTIAL GTH-PBE-q1",
                 "TYPE DFTD3(BJ)", "CUTOFF 800", "&XC_FUNCTIONAL PBE", "OPERATOR BERRY", "A 6.0000000000 0.0000000000"):
        assert line in text
    assert "VDW_POTENTIAL" not in cp2k.write_input(nh3, "pbe", "gth-dzvp", "gth-pbe", None, {"N": 5, "H": 1}, 800, 60)


def test_cp2k_settings_it_cannot_run_are_refused_before_any_frame(monkeypatch):
    monkeypatch.setenv("LEGATO_CP2K", "no-such-cp2k-program")
    with pytest.raises(ValueError, match="no CP2K program found"):
        label_module.DFTSettings(code="cp2k", wannier_order=1).check({"N", "H"})
    monkeypatch.setenv("LEGATO_CP2K", "true")  # any program on PATH passes the first check
    with pytest.raises(ValueError, match="--wannier-order 2: CP2K"):
        label_module.DFTSettings(code="cp2k").check({"N", "H"})
    with pytest.raises(ValueError, match="--basis gth-cc-dzvp: --code cp2k knows"):
        label_module.DFTSettings(code="cp2k", wannier_order=1, basis="gth-cc-dzvp").check({"N", "H"})
    with pytest.raises(ValueError, match="--code vasp"):
        label_module.DFTSettings(code="vasp").check({"N", "H"})


@pytest.mark.slow  # two SCFs, ~1 min on one core
@pytest.mark.skipif(__import__("shutil").which("cp2k.psmp") is None and __import__("shutil").which("cp2k") is None,
                    reason="CP2K is not installed (apt install cp2k)")
def test_cp2k_and_pyscf_give_the_same_labels():
    """Same GTH basis, pseudopotentials, PBE-D3(BJ) and Berry-phase centres: one method, two codes."""
    from ase.build import molecule

    nh3 = molecule("NH3")
    nh3.cell, nh3.pbc = [4.5, 4.5, 4.5], True
    nh3.center()
    nh3.rattle(0.05, seed=2)
    pyscf = label_module.label_frame(nh3, label_module.DFTSettings(wannier_order=1))
    cp2k = label_module.label_frame(nh3, label_module.DFTSettings(wannier_order=1, code="cp2k"))
    assert cp2k.info["code"].startswith("CP2K") and pyscf.info["code"].startswith("pyscf")
    assert np.abs(pyscf.arrays["forces"]).max() > 0.3  # a frame with real forces
    np.testing.assert_allclose(cp2k.arrays["forces"], pyscf.arrays["forces"], atol=0.01)  # eV/A
    np.testing.assert_allclose(cp2k.info["dipole"], pyscf.info["dipole"], atol=2e-3)  # e*A
    assert cp2k.info["energy"] == pytest.approx(pyscf.info["energy"], abs=0.01)  # eV, same pseudopotentials
