"""`legato export MODEL --nequip DIR`: nequip's own tools and calculator reproduce the legato model."""

import numpy as np
import pytest
import torch

from legato.geometry import ammonia_phase_i
from legato.modelfile import ModelFileError, read_model_file
from legato.nequip_export import allegro_config, example_frame, export_nequip, write_checkpoint
from legato.potential import LegatoCalculator
from legato.shipped import default_model, fast_model
from legato.training.structures import rattled

from conftest import assert_one_line_error

FAST_MODEL = fast_model()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The shipped fast model exported with the ASE target compiled (nequip's tools, ~2 min)."""
    out = tmp_path_factory.mktemp("nequip")
    return export_nequip(FAST_MODEL, out, targets=["ase"], log=lambda line: None)


def _frames():
    return rattled(ammonia_phase_i().repeat((2, 1, 1)), 3, stdev=0.05, seed=3)


def assert_same_energies_and_forces(calculator, model_file):
    ours = LegatoCalculator(model_file)
    for atoms in _frames():
        atoms.calc = calculator
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = ours
        ref_energy, ref_forces = atoms.get_potential_energy(), atoms.get_forces()
        assert abs(energy - ref_energy) <= 1e-5 * abs(ref_energy)
        assert np.abs(forces - ref_forces).max() <= 1e-5 * np.abs(ref_forces).max()


@pytest.mark.slow
def test_nequip_package_reproduces_the_model(exported):
    from nequip.integrations.ase import NequIPCalculator

    calculator = NequIPCalculator._from_saved_model(str(exported["package"]), device="cpu", chemical_species_to_atom_type_map=True)
    assert_same_energies_and_forces(calculator, FAST_MODEL)


@pytest.mark.slow
def test_nequip_compiled_model_reproduces_the_model(exported):
    from nequip.integrations.ase import NequIPCalculator

    calculator = NequIPCalculator.from_compiled_model(str(exported["ase"]), device="cpu", chemical_species_to_atom_type_map=True)
    assert_same_energies_and_forces(calculator, FAST_MODEL)


@pytest.mark.parametrize("model_file", [fast_model(), default_model()], ids=["fast", "sam"])
def test_checkpoint_holds_the_model_without_its_wannier_head(tmp_path, model_file):
    """Every weight but the Wannier head's, unchanged (loading is strict: a missing or extra
    weight fails); the SAM file names its architecture by the module it lived in before."""
    payload = read_model_file(model_file)
    checkpoint = torch.load(write_checkpoint(model_file, tmp_path), map_location="cpu", weights_only=False)
    assert checkpoint["hyper_parameters"]["model"]["_target_"] == "allegro.model.AllegroModel"
    assert not any(k.startswith("wannier_mlp_") for k in checkpoint["hyper_parameters"]["model"])
    head = [k for k in payload["state_dict"] if ".wannier_head." in k]
    assert head, "the shipped model has a Wannier head to leave out"
    saved = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.sole_model.")}
    kept = {k: v for k, v in payload["state_dict"].items() if k not in head}
    assert len(saved) == len(kept)
    for key, tensor in kept.items():
        assert torch.equal(saved[f"model.sole_model.{key}"], tensor)


def test_example_frame_has_edges_for_every_atom():
    from ase.neighborlist import neighbor_list

    frame = example_frame(["H", "C", "N"], r_max=2.0)
    centres = neighbor_list("i", frame, 2.0)
    assert set(centres) == set(range(len(frame)))
    assert set(frame.get_chemical_symbols()) == {"H", "C", "N"}


def test_other_architectures_are_refused():
    payload = read_model_file(FAST_MODEL)
    payload["model_config"]["_target_"] = "mypackage.MyModel"
    with pytest.raises(ModelFileError, match="mypackage.MyModel has no nequip export"):
        allegro_config(payload)


def test_export_refuses_foreign_species_and_unknown_targets(tmp_path):
    import ase

    with pytest.raises(ModelFileError, match="example frame has species"):
        write_checkpoint(FAST_MODEL, tmp_path, example=ase.Atoms("CO", positions=[[0, 0, 0], [1.1, 0, 0]]))
    with pytest.raises(ValueError, match="unknown nequip-compile target"):
        export_nequip(FAST_MODEL, tmp_path, targets=["lammps"])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no GPU here"):
            export_nequip(FAST_MODEL, tmp_path / "cuda", targets=["ase"], device="cuda")
        assert not (tmp_path / "cuda").exists()  # refused before any file is written


def test_cli_export_of_a_model_file_needs_a_nequip_folder(legato_in_process):
    result = legato_in_process("export", str(FAST_MODEL))
    assert_one_line_error(result, "give --nequip DIR")
