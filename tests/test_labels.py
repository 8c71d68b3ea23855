"""Structures, Wannier localization and the resumable labelling loop."""

import json
import re

import ase.io
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from legato.training import label as label_module
from legato.analysis.orientation import bond_vectors, hydrogen_bonds, turn_angles
from legato.geometry import ammonia_phase_i, molecules_of
from legato.training.structures import closest_intermolecular, cluster_set, displaced_set, liquid_set, molecular_cluster, molecular_liquid, path_between, rattled, reoriented_set, rotated_molecule, turned_about_own_axes
from legato.training.wannier import assign_centres, centres_from_z, jacobi_localize, spread_weights


def test_phase_i_crystal_has_the_right_symmetry_and_geometry():
    import spglib

    atoms = ammonia_phase_i(5.13)
    cell = (atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers)
    assert spglib.get_spacegroup(cell, symprec=1e-3) == "P2_13 (198)"
    assert atoms.get_chemical_formula() == "H12N4"
    nh = np.sort(atoms.get_all_distances(mic=True)[0, 4:])[:3]
    np.testing.assert_allclose(nh, 0.99, atol=0.03)  # N-H bond
    assert len(ammonia_phase_i(5.05, (2, 2, 2))) == 128


def test_liquid_box_has_the_requested_density_and_no_overlaps():
    box = molecular_liquid("NH3", 8, 0.68, seed=3)
    density = box.get_masses().sum() / 6.02214076e23 / (box.get_volume() * 1e-24)
    assert density == pytest.approx(0.68, rel=1e-6)
    d = box.get_all_distances(mic=True)[np.triu_indices(len(box), 1)]
    assert d.min() > 0.9


def test_liquid_set_holds_any_molecule_at_the_density_displaced():
    frames = liquid_set("H2O", 3, 8, 1.0, stdev=0.03, seed=1)
    assert len(frames) == 3 and all(f.get_chemical_formula() == "H16O8" for f in frames)
    for k, box in enumerate(frames):
        density = box.get_masses().sum() / 6.02214076e23 / (box.get_volume() * 1e-24)
        assert density == pytest.approx(1.0, rel=1e-6)
        undisplaced = molecular_liquid("H2O", 8, 1.0, seed=1 + k)
        shift = np.linalg.norm(box.positions - undisplaced.positions, axis=1)[box.numbers == 1]
        assert 0.01 < np.sqrt(np.mean(shift**2)) / np.sqrt(3) < 0.05  # hydrogen: about stdev per axis
    with pytest.raises(ValueError, match="unknown molecule 'XYZ'"):
        liquid_set("XYZ", 1, 4, 1.0)


def test_displaced_set_takes_the_sources_in_turn():
    sources = [ammonia_phase_i(5.0), ammonia_phase_i(5.2)]
    frames = displaced_set(sources, 5, stdev=0.05, seed=0)
    assert [f.cell[0, 0] for f in frames] == pytest.approx([5.0, 5.2, 5.0, 5.2, 5.0])
    assert not np.allclose(frames[0].positions, frames[2].positions)  # each frame its own displacement
    assert all(0.05 < np.abs(f.positions - sources[k % 2].positions).max() < 0.4 for k, f in enumerate(frames))


def test_displaced_tiles_each_source_and_displaces_every_image_on_its_own():
    source = ammonia_phase_i(5.13)
    frames = displaced_set([source], 3, stdev=0.05, seed=0, repeat=2, strain=0.03)
    for frame in frames:
        assert len(frame) == 128 and frame.get_chemical_formula() == "H96N32"
        scale = frame.cell[0, 0] / 10.26
        assert 0.97 <= scale <= 1.03 and np.allclose(frame.cell.array, np.eye(3) * frame.cell[0, 0])
        images = (frame.positions - source.repeat(2).positions * scale).reshape(8, 16, 3)
        assert not np.allclose(images[0], images[1], atol=1e-3)  # not eight copies of one displacement
        assert 0.02 < np.sqrt(np.mean(images[:, 4:] ** 2)) < 0.08  # hydrogen: about stdev per axis
    assert len({round(f.cell[0, 0], 6) for f in frames}) == 3  # each frame its own strain


@pytest.mark.parametrize("name, n_molecules", [("NH3", 1), ("NH3", 2), ("H2O", 6)])
def test_clusters_hold_whole_molecules_in_vacuum(name, n_molecules):
    from ase.build import molecule

    vacuum = 7.0
    cluster = molecular_cluster(name, n_molecules, vacuum=vacuum, seed=2, min_box=0.0)
    assert len(cluster) == n_molecules * len(molecule(name)) and len(molecules_of(cluster)) == n_molecules
    box = cluster.cell[0, 0]
    assert box >= vacuum and np.allclose(cluster.cell.array, np.eye(3) * box) and cluster.pbc.all()
    extent = cluster.positions.max(axis=0) - cluster.positions.min(axis=0)
    assert box - extent.max() == pytest.approx(vacuum)  # the least gap between periodic images
    assert (cluster.positions.min(axis=0) > 0).all() and (cluster.positions.max(axis=0) < box).all()  # centred, not split by a face
    d = cluster.get_all_distances()[np.triu_indices(len(cluster), 1)]
    assert d.min() > 0.9
    if n_molecules > 1:  # in contact: each centre of mass within 1.7 A + 2.2 molecular radii of another
        template = molecule(name)
        reach = 1.7 + 2.2 * np.linalg.norm(template.positions - template.get_center_of_mass(), axis=1).max()
        centres = np.array([cluster[idx].get_center_of_mass() for idx in molecules_of(cluster)])
        between = np.linalg.norm(centres[:, None] - centres[None], axis=-1) + np.eye(n_molecules) * 1e3
        assert (between.min(axis=1) <= reach + 1e-9).all() and reach < 4.0
    frames = cluster_set(name, 2, n_molecules, vacuum=vacuum, stdev=0.03, seed=2, min_box=0.0)
    assert frames[0].info["structure"] == f"{name} cluster, {n_molecules} molecule(s)"
    assert 0.005 < np.abs(frames[0].positions - cluster.positions).max() < 0.3
    roomy = molecular_cluster(name, n_molecules, vacuum=vacuum, seed=2, min_box=25.0)  # at least min_box across, still centred
    assert roomy.cell[0, 0] == pytest.approx(max(25.0, box))
    np.testing.assert_allclose(roomy.positions.mean(axis=0) - roomy.cell[0, 0] / 2, cluster.positions.mean(axis=0) - box / 2, atol=1e-9)


def test_rattled_frames_stay_physical():
    frames = rattled(ammonia_phase_i(), 50, stdev=0.07, seed=0)
    closest = min(f.get_all_distances(mic=True)[np.triu_indices(16, 1)].min() for f in frames)
    assert closest >= 0.75


def test_rotated_molecule_turns_one_molecule_rigidly_by_the_angle():
    crystal = ammonia_phase_i(5.13)
    molecules = molecules_of(crystal)
    assert sorted(len(m) for m in molecules) == [4, 4, 4, 4]
    turned = rotated_molecule(crystal, 70.0, np.random.default_rng(3), molecules)
    bonds = hydrogen_bonds(crystal)
    angles = turn_angles(bond_vectors(crystal, bonds), bond_vectors(turned, bonds))
    moved = angles > 1e-6
    assert moved.sum() == 3  # the three N-H bonds of one molecule, nothing else
    assert angles[moved].max() <= 70.0 + 1e-6 and angles[moved].min() > 0.0
    distances = lambda atoms, idx: atoms.get_all_distances(mic=True)[np.ix_(idx, idx)]  # noqa: E731
    for idx in molecules:
        np.testing.assert_allclose(distances(turned, idx), distances(crystal, idx), atol=1e-10)


def test_turning_about_c3_keeps_the_space_group_and_120_degrees_restores_the_crystal():
    import spglib

    crystal = ammonia_phase_i(5.13)
    turned = turned_about_own_axes(crystal, 25.0)
    assert spglib.get_spacegroup((turned.cell.array, turned.get_scaled_positions(), turned.numbers), symprec=1e-4) == "P2_13 (198)"
    np.testing.assert_allclose(turned.get_all_distances(mic=True)[:4, 4:].min(axis=0), crystal.get_all_distances(mic=True)[:4, 4:].min(axis=0), atol=1e-10)
    assert np.abs(turned.positions - crystal.positions).max() > 0.3
    full_turn = turned_about_own_axes(crystal, 120.0)  # H atoms trade places
    d = full_turn.positions[4:, None, :] - crystal.positions[None, 4:, :]
    assert np.abs(d).sum(axis=-1).min(axis=1).max() < 1e-10


def test_reoriented_set_keeps_molecules_apart():
    frames = reoriented_set(ammonia_phase_i(5.05), 8, seed=0)
    molecules = molecules_of(ammonia_phase_i(5.05))
    assert min(closest_intermolecular(f, molecules) for f in frames) >= 1.4


def test_path_between_two_structures_moves_molecules_rigidly_across_cell_faces():
    crystal = ammonia_phase_i(5.13)
    molecules = molecules_of(crystal)
    end = rotated_molecule(crystal, 90.0, np.random.default_rng(1), molecules)
    end.positions[molecules[2]] += [0.6, -0.4, 0.2]
    end.positions += [3.0, 0.0, 0.0]  # all atoms: a rigid shift that wraps some across the cell face
    end.wrap()
    frames = path_between(crystal, end, 5, stdev=0.0, overshoot=0.0)
    assert [f.info["path_fraction"] for f in frames] == [0.0, 0.25, 0.5, 0.75, 1.0]
    apart = lambda a, b: np.abs(a.get_distances(0, range(len(a)), mic=True, vector=True) - b.get_distances(0, range(len(b)), mic=True, vector=True)).max()  # noqa: E731
    assert apart(frames[0], crystal) < 1e-10 and apart(frames[-1], end) < 1e-10
    distances = lambda atoms, idx: atoms.get_all_distances(mic=True)[np.ix_(idx, idx)]  # noqa: E731
    for frame in frames:  # a straight line for every atom would shorten the turning molecule's bonds
        for idx in molecules:
            np.testing.assert_allclose(distances(frame, idx), distances(crystal, idx), atol=1e-10)
    def turned_by(frame, idx):  # degrees, rigid rotation of molecule idx from the crystal
        body = lambda atoms: atoms.get_distances(idx[0], idx, mic=True, vector=True)  # noqa: E731
        centred = lambda v: v - v.mean(axis=0)  # noqa: E731
        return np.degrees(Rotation.align_vectors(centred(body(frame)), centred(body(crystal)))[0].magnitude())

    turned = [idx for idx in molecules if turned_by(end, idx) > 1.0]
    assert len(turned) == 1 and turned_by(end, turned[0]) == pytest.approx(90.0)
    assert [turned_by(f, turned[0]) for f in frames] == pytest.approx([0.0, 22.5, 45.0, 67.5, 90.0], abs=1e-6)


def test_path_between_rejects_different_atoms():
    crystal = ammonia_phase_i(5.13)
    with pytest.raises(ValueError, match="same atoms"):
        path_between(crystal, crystal[::-1], 3)


@pytest.mark.parametrize("order", [1, 2])
def test_jacobi_localization_recovers_known_centres(order):
    """Z(mG_a) = U diag(exp(-i m G_a . r_k)) U^T for a random rotation U: centres r_k must come back."""
    rng = np.random.default_rng(0)
    lattice = np.diag([9.0, 10.0, 11.0])
    centres = rng.uniform(0, 1, size=(6, 3)) @ lattice
    reciprocal = 2 * np.pi * np.linalg.inv(lattice).T
    gs = np.concatenate([m * reciprocal for m in range(1, order + 1)])
    phases = np.exp(-1j * centres @ gs.T).T  # (3 * order, n)
    u, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    z = np.einsum("ik,gk,jk->gij", u, phases, u)
    _, z_loc, sweeps = jacobi_localize(z, spread_weights(lattice, order))
    found = centres_from_z(z_loc, lattice) % np.diag(lattice)
    order = [np.argmin(np.linalg.norm(found - c, axis=1)) for c in centres]
    np.testing.assert_allclose(found[order], centres, atol=1e-8)
    assert sweeps < 50


def test_second_order_centre_is_closer_to_the_centroid_of_a_skewed_orbital():
    """A lopsided density (two Gaussians) in a box: order 1 misses its centroid by -G^2 kappa_3 / 6, order 2 by O(G^4)."""
    box = 10.0
    lattice = np.eye(3) * box
    weights, means, sigma = np.array([0.7, 0.3]), np.array([4.8, 5.6]), 0.35  # A; centroid 5.04

    def z_diag(g):  # <exp(-i g x)> of the density, the same along y and z
        return np.sum(weights * np.exp(-1j * g * means - 0.5 * (g * sigma) ** 2))

    centroid = weights @ means
    g = 2 * np.pi / box
    first = centres_from_z(np.full((3, 1, 1), z_diag(g)), lattice)[0, 0] % box
    second = centres_from_z(np.concatenate([np.full((3, 1, 1), z_diag(g)), np.full((3, 1, 1), z_diag(2 * g))]), lattice)[0, 0] % box
    kappa3 = weights @ (means - centroid) ** 3
    assert first - centroid == pytest.approx(-(g**2) * kappa3 / 6, rel=0.25)  # the leading finite-box term
    assert abs(second - centroid) < abs(first - centroid) / 5


def test_centres_go_to_the_nearest_owner_across_the_boundary():
    positions = np.array([[0.2, 5.0, 5.0], [9.0, 5.0, 5.0], [5.0, 5.0, 5.0]])
    cell = np.eye(3) * 10.0
    centres = np.array([[9.9, 5.0, 5.0], [0.5, 5.1, 5.0], [5.0, 5.5, 5.0]])
    disp, count = assign_centres(positions, centres, cell, owners=np.array([True, False, True]))
    assert list(count) == [2, 0, 1]
    np.testing.assert_allclose(disp[0], [0.0, 0.05, 0.0], atol=1e-12)  # (-0.3 + 0.3) / 2, (0 + 0.1) / 2
    np.testing.assert_allclose(disp[2], [0.0, 0.5, 0.0])


def test_labelling_resumes_and_records_failures(tmp_path, monkeypatch, capsys):
    from conftest import analytic_labels

    frames = rattled(ammonia_phase_i(), 4, stdev=0.03, seed=1)
    frames[2].positions[1] = frames[2].positions[0] + 0.1  # overlapping atoms: must fail, once
    structures = tmp_path / "in.extxyz"
    ase.io.write(structures, frames)
    calls = []

    def fake_label(atoms, settings):
        calls.append(atoms.info["source_index"])
        if atoms.get_all_distances(mic=True)[np.triu_indices(len(atoms), 1)].min() < 0.5:
            raise ValueError("overlapping atoms")
        labelled = analytic_labels(atoms)
        labelled.info.update(settings.provenance())
        return labelled

    monkeypatch.setattr(label_module, "label_frame", fake_label)
    out = tmp_path / "out.extxyz"
    first = label_module.label_file(structures, out, progress=False, limit=2)
    assert first["labelled"] == 2 and calls == [0, 1]
    log = capsys.readouterr().out.splitlines()  # the time to go: mean time per frame so far x frames left
    assert re.fullmatch(r"frame 0: labelled in 0 s \(1 of 2 this run; \d s to go\)", log[0]) and log[1].endswith("(2 of 2 this run)")
    second = label_module.label_file(structures, out, progress=False)
    assert calls == [0, 1, 2, 3] and second == {"total": 4, "already_done": 2, "labelled": 1, "failed": 1}
    log = capsys.readouterr().out.splitlines()  # one line per frame, also without the bar
    assert log[0].startswith("frame 2: not labelled (overlapping atoms); skipped, reason in") and log[0].endswith("00002.failed.json")
    assert len(log) == 2 and log[1].startswith("frame 3: labelled in") and log[1].endswith("(1 of 2 this run)")
    third = label_module.label_file(structures, out, progress=False)
    assert calls == [0, 1, 2, 3] and third["labelled"] == 0
    labelled = ase.io.read(out, ":")
    assert [a.info["source_index"] for a in labelled] == [0, 1, 3]
    failure = json.loads((tmp_path / "out.extxyz.parts" / "00002.failed.json").read_text())
    assert "overlapping" in failure["reason"]
    import shutil

    shutil.rmtree(tmp_path / "out.extxyz.parts")  # a fresh clone keeps only the assembled output
    committed = out.read_text()
    fourth = label_module.label_file(structures, out, progress=False)
    assert calls == [0, 1, 2, 3, 2] and fourth["labelled"] == 0  # only the failed frame is retried
    assert out.read_text() == committed  # resuming leaves the committed file as it was, byte for byte
    assert [a.info["source_index"] for a in ase.io.read(out, ":")] == [0, 1, 3]
    with pytest.raises(ValueError, match="--wannier-order 1"):  # another estimator must not extend the file
        label_module.label_file(structures, out, label_module.DFTSettings.converged(wannier_order=2, code="pyscf"), progress=False)
    with pytest.raises(ValueError, match="--min-cell-length 10"):  # nor another Brillouin-zone sampling
        label_module.label_file(structures, out, label_module.DFTSettings.converged(min_cell_length=0, code="pyscf"), progress=False)
    other = tmp_path / "other.extxyz"  # other structures must not count as done under the old labels
    ase.io.write(other, rattled(ammonia_phase_i(), 4, stdev=0.03, seed=2))
    with pytest.raises(ValueError, match=r"holds labels of other structures than .*other.extxyz \(frame 0 differs\)"):
        label_module.label_file(other, out, progress=False)
    ase.io.write(structures, frames[:2])  # nor may fewer frames: done frame 3 is no longer in the input
    with pytest.raises(ValueError, match="frame 3 differs"):
        label_module.label_file(structures, out, progress=False)
    assert calls == [0, 1, 2, 3, 2]


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"xc": "nonsense"}, "--xc nonsense: not a functional"),
        ({"ke_cutoff": -5.0}, "--ke-cutoff -5.0: give a positive cutoff"),
        ({"basis": "nonsense"}, "--basis nonsense: PySCF has none for H"),
        ({"pseudo": "nonsense"}, "--pseudo nonsense: PySCF has none for H"),
        ({"dispersion": "d4"}, "--dispersion d4 with --xc pbe: not available"),
        ({"xc": "lda"}, "--dispersion d3bj with --xc lda: not available"),  # D3 has no parameters for LDA
    ],
)
def test_settings_pyscf_cannot_run_fail_before_any_frame(tmp_path, settings, message):
    """Failed frames are not retried on resume: a setting error must stop the job, not fail every frame."""
    structures = tmp_path / "in.extxyz"
    ase.io.write(structures, ammonia_phase_i())
    with pytest.raises(ValueError, match=re.escape(message)):
        label_module.label_file(structures, tmp_path / "out.extxyz", label_module.DFTSettings(**settings), progress=False)
    assert not (tmp_path / "out.extxyz.parts").exists()


def test_ipi_xyz_frames_are_labelled_in_their_cell(tmp_path, monkeypatch):
    """ase.io.read takes an i-PI xyz file for plain xyz and drops its cell."""
    from conftest import analytic_labels

    from legato.fileio import write_structure

    crystal = ammonia_phase_i()
    path = write_structure(tmp_path / "bead.xyz", crystal, "phase I")
    cells = []

    def fake_label(atoms, settings):
        cells.append(atoms.cell.cellpar())
        labelled = analytic_labels(atoms)
        labelled.info.update(settings.provenance())
        return labelled

    monkeypatch.setattr(label_module, "label_frame", fake_label)
    label_module.label_file(path, tmp_path / "out.extxyz", progress=False)
    np.testing.assert_allclose(cells, [crystal.cell.cellpar()], atol=1e-6)
    assert ase.io.read(tmp_path / "out.extxyz").pbc.all()


@pytest.mark.slow  # three periodic SCFs at PySCF's default cutoff, ~25 s
def test_labelled_forces_are_minus_the_gradient_of_the_labelled_energy():
    """PySCF multigrid PBE + D3(BJ) as `legato label` runs it: central difference along a random direction."""
    from ase.build import molecule

    nh3 = molecule("NH3")
    nh3.cell, nh3.pbc = [4.0, 4.0, 4.0], True  # periodic images 4 A away: small grid, ~5 s per SCF
    nh3.center()
    nh3.rattle(0.05, seed=1)
    settings = label_module.DFTSettings(wannier_order=1)
    forces = label_module.label_frame(nh3, settings).arrays["forces"]
    direction = np.random.default_rng(0).normal(size=forces.shape)
    direction /= np.linalg.norm(direction)
    h = 0.01  # A
    energies = []
    for sign in (1, -1):
        moved = nh3.copy()
        moved.positions += sign * h * direction
        energies.append(label_module.label_frame(moved, settings).info["energy"])
    slope = -(energies[0] - energies[1]) / (2 * h)  # eV/A
    assert abs(np.sum(forces * direction)) > 0.1  # a direction with a real force along it
    assert slope == pytest.approx(np.sum(forces * direction), abs=0.003)


def test_model_labels_are_the_models_predictions_and_never_mix_with_dft(tmp_path):
    """`legato label --model`: the data of a distilled model, recorded as the model's labels."""
    from legato.dataset import DatasetError, load_dataset
    from legato.potential import ModelPotential
    from legato.shipped import fast_model
    from legato.training.merge import merge_datasets
    from legato.fileio import file_sha256
    from legato.training.model_labels import ModelLabels

    frames = rattled(ammonia_phase_i(), 3, stdev=0.05, seed=4)
    structures = tmp_path / "in.extxyz"
    ase.io.write(structures, frames)
    out = tmp_path / "model.extxyz"
    counts = label_module.label_file(structures, out, ModelLabels(str(fast_model())), progress=False, limit=2)
    assert counts["labelled"] == 2
    assert label_module.label_file(structures, out, ModelLabels(str(fast_model())), progress=False)["labelled"] == 1  # resumes
    labelled = load_dataset(out)  # a valid data set: legato train takes it
    frames = ase.io.read(structures, ":")  # as written (positions to 8 decimals)
    expected = ModelPotential.from_file(fast_model(), atoms_per_call=16).evaluate(
        frames[0].get_chemical_symbols(), np.stack([f.positions for f in frames]), np.stack([f.cell.array for f in frames])
    )
    np.testing.assert_allclose([a.get_potential_energy() for a in labelled], expected["energy"], rtol=1e-9)
    np.testing.assert_allclose(np.stack([a.get_forces() for a in labelled]), expected["forces"], atol=1e-9)
    assert labelled[0].info["method"] == f"model fast.legato.pt sha256:{file_sha256(fast_model())[:16]}"

    dft = tmp_path / "dft.extxyz"  # a DFT-labelled file: merging it with model labels is refused
    from conftest import analytic_labels

    dft_frame = analytic_labels(rattled(ammonia_phase_i(), 1, stdev=0.05, seed=5)[0])
    dft_frame.info.update(label_module.DFTSettings.converged().provenance())
    ase.io.write(dft, dft_frame)
    with pytest.raises(DatasetError, match="labelled differently from frame 0"):
        merge_datasets([out, dft], tmp_path / "mixed.extxyz")
    with pytest.raises(ValueError, match=r"model.extxyz was labelled with .*label into a new file"):  # nor is resuming with DFT
        label_module.label_file(structures, out, label_module.DFTSettings.converged(code="pyscf"), progress=False)

    water = tmp_path / "water.extxyz"
    ase.io.write(water, ase.Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], cell=[8, 8, 8], pbc=True))
    with pytest.raises(ValueError, match=r"--model .*fast.legato.pt knows \['H', 'N'\], not \['O'\]"):
        label_module.label_file(water, tmp_path / "w.extxyz", ModelLabels(str(fast_model())), progress=False)
    with pytest.raises(ValueError, match="--model nowhere.legato.pt: no such model file"):
        label_module.label_file(structures, tmp_path / "x.extxyz", ModelLabels("nowhere.legato.pt"), progress=False)
