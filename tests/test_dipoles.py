"""Wrap-proof dipoles: the cell dipole of whole molecules, however positions are wrapped."""

from pathlib import Path

import numpy as np
import pytest

from legato.fileio import bead_files, read_extras
from legato.geometry import ammonia_phase_i, whole_molecules
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
