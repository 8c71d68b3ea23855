"""Wrap-proof dipoles: the cell dipole of whole molecules, however positions are wrapped."""

from pathlib import Path

import numpy as np
import pytest

from legato.fileio import bead_files, read_extras
from legato.geometry import WholeMolecules, ammonia_phase_i, whole_molecules
from legato.potential import ModelPotential

REPO = Path(__file__).resolve().parent.parent
SHIFT = np.array([2.3, -1.7, 0.9])  # A: moves several molecules across the cell faces


def split_frame():
    """Phase I, displaced, translated by SHIFT, atoms wrapped into the cell, so molecules straddle its faces."""
    crystal = ammonia_phase_i(5.13)
    crystal.rattle(0.05, seed=3)  # no symmetry left to cancel the cell dipole
    crystal.positions = whole_molecules(crystal.numbers, crystal.positions, crystal.cell.array) + SHIFT
    wrapped = crystal.copy()
    wrapped.wrap()
    h_to_n = np.linalg.norm(wrapped.positions[4:, None] - wrapped.positions[None, :4], axis=2).min(axis=1)
    assert h_to_n.max() > 1.5  # without the minimum image, some H has no N within a bond length
    return crystal, wrapped


def test_whole_molecules_undo_any_wrapping():
    crystal, wrapped = split_frame()
    whole = whole_molecules(wrapped.numbers, wrapped.positions, wrapped.cell.array)
    bonds = np.linalg.norm(whole[4:, None] - whole[None, :4], axis=2).min(axis=1)  # each H to its N, no images
    assert bonds.max() < 1.2
    shift = whole - crystal.positions  # each atom moved by lattice vectors only, one per molecule
    np.testing.assert_allclose(np.round(shift / 5.13), shift / 5.13, atol=1e-9)


def wrapped_frames(n_frames=6, seed=5):
    """2x2x2 phase I in a sheared cell, each frame displaced, shifted and wrapped its own way."""
    crystal = ammonia_phase_i(5.13, repeat=(2, 2, 2))
    cell = crystal.cell.array + np.array([[0, 0, 0], [1.1, 0, 0], [0.4, -0.7, 0]])  # triclinic
    crystal.set_cell(cell, scale_atoms=True)
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n_frames):
        frame = crystal.copy()
        frame.positions = whole_molecules(frame.numbers, frame.positions, cell) + rng.normal(0, 0.05, frame.positions.shape) + rng.uniform(-5, 5, 3)
        frame.wrap()
        frames.append(frame)
    return crystal, frames


def test_cached_bond_tree_makes_the_same_whole_molecules():
    crystal, frames = wrapped_frames()
    positions = np.stack([f.positions for f in frames])
    cells = np.stack([f.cell.array for f in frames])
    whole = WholeMolecules()
    expected = np.stack([whole_molecules(crystal.numbers, p, c) for p, c in zip(positions, cells)])
    np.testing.assert_allclose(whole(crystal.numbers, positions, cells), expected, atol=1e-10)
    np.testing.assert_allclose(whole(crystal.numbers, positions[::-1], cells[::-1]), expected[::-1], atol=1e-10)  # the tree is reused
    slab = cells.copy()
    slab[:, 2] = 0.0  # periodic in x and y only, no third vector
    expected = np.stack([whole_molecules(crystal.numbers, p, c, (True, True, False)) for p, c in zip(positions, slab)])
    np.testing.assert_allclose(WholeMolecules()(crystal.numbers, positions, slab, (True, True, False)), expected, atol=1e-10)


def test_cached_bond_tree_follows_a_proton_to_another_molecule():
    """An H moved next to another N breaks a bond of the cached tree: that frame is made whole
    from its own bonds, as whole_molecules does, and its tree is kept for the next frames."""
    crystal, frames = wrapped_frames(2)
    whole = WholeMolecules()
    cells = np.stack([f.cell.array for f in frames])
    whole(crystal.numbers, np.stack([f.positions for f in frames]), cells)
    moved = frames[1].copy()
    n_atoms = np.flatnonzero(moved.numbers == 7)
    h = int(np.flatnonzero(moved.numbers == 1)[0])
    far = n_atoms[np.argmax(moved.get_distances(h, n_atoms, mic=True))]
    moved.positions[h] = moved.positions[far] + [0.0, 0.0, 1.02]  # now bonded to the farthest N
    positions = np.stack([frames[0].positions, moved.positions])
    result = whole(crystal.numbers, positions, cells)
    expected = whole_molecules(crystal.numbers, moved.positions, cells[1])
    np.testing.assert_allclose(result[1], expected, atol=1e-10)
    assert np.linalg.norm(result[1][h] - result[1][far]) < 1.1  # whole with its new N
    np.testing.assert_allclose(whole(crystal.numbers, positions[1:], cells[1:])[0], expected, atol=1e-10)  # the new tree


def test_dipole_is_the_same_for_wrapped_and_unwrapped_positions(tiny_model_file):
    potential = ModelPotential.from_file(tiny_model_file)
    crystal, wrapped = split_frame()
    symbols = crystal.get_chemical_symbols()
    cell = crystal.cell.array[None]
    dipole_whole = potential.evaluate(symbols, crystal.positions[None], cell)["dipole"][0]
    dipole_wrapped = potential.evaluate(symbols, wrapped.positions[None], cell)["dipole"][0]
    assert np.linalg.norm(dipole_whole) > 1e-3  # a model dipole that is not zero by symmetry or chance
    np.testing.assert_allclose(dipole_wrapped, dipole_whole, atol=1e-8)
    # the formula on the wrapped positions as given (no whole molecules) is off by charges x lattice vectors
    from legato.fields import dipole_from_wannier

    naive = dipole_from_wannier(wrapped.positions, potential.per_atom(symbols, "valence_charge"), potential.per_atom(symbols, "wannier_count"),
                                potential.evaluate(symbols, wrapped.positions[None], cell)["wannier_disp"][0])
    assert np.linalg.norm(naive - dipole_whole) > 1.0  # e*A: what IR spectra got before


@pytest.mark.parametrize("nbeads", [2])
def test_ipi_wrapping_or_not_gives_the_same_dipoles(tmp_path, tiny_model_file, nbeads):
    """Through real i-PI: pbc='true' on the socket (positions wrapped before they are sent) and
    pbc='false' (sent as integrated) give the same per-bead dipoles, hence the same IR spectrum."""
    from legato.driver.pes import LegatoDriver
    from legato.driver.run import RunSettings, run_simulation

    crystal, _ = split_frame()
    lines = ["16", "# CELL(abcABC): 5.13 5.13 5.13 90 90 90 cell{angstrom} positions{angstrom}"]
    lines += [f"{s} {x:.8f} {y:.8f} {z:.8f}" for s, (x, y, z) in zip(crystal.get_chemical_symbols(), crystal.positions)]
    template = (REPO / "ipi_inputs" / "nh3_solid_pimd_nvt.xml").read_text()
    assert "pbc='false'" in template
    dipoles = {}
    for pbc in ("false", "true"):
        folder = tmp_path / pbc
        folder.mkdir()
        (folder / "split.xyz").write_text("\n".join(lines) + "\n")
        xml = folder / "input.xml"
        xml.write_text(template.replace("nh3_phase_i.xyz", "split.xyz").replace("pbc='false'", f"pbc='{pbc}'"))
        settings = RunSettings(nbeads=nbeads, total_steps=12, stride=2, seed=7)
        run_dir = run_simulation(xml, folder / "run", lambda s: LegatoDriver(model=str(tiny_model_file), structure=str(s)), settings, progress=False)
        dipoles[pbc] = np.array([read_extras(f)[1] for f in bead_files(run_dir, "simulation", "dip")])
    assert dipoles["true"].shape == (nbeads, 7, 3)
    np.testing.assert_allclose(dipoles["true"], dipoles["false"], atol=1e-5)
    assert np.abs(np.diff(dipoles["false"], axis=1)).max() > 1e-4  # the dipoles moved along the run
