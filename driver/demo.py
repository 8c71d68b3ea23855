"""The runs of `legato demo`: solid ammonia relaxed with the model, then classical MD and
TRPMD through i-PI, each after its own equilibration (strong PILE-L thermostat,
``equilibrate_nvt.xml``). Their spectra and the NQE table come from
:func:`legato.analysis.pipeline.compare_runs`.

Runs resume if interrupted; finished runs are reused. ``<output>/study.json`` records the
model and settings, and a demo folder is reused only with the same ones.
"""

from __future__ import annotations

from pathlib import Path

from legato.fileio import file_sha256, read_frames, record_study, write_structure
from legato.potential import LegatoCalculator, ModelPotential, relaxed, torch_device
from legato.shipped import TEMPLATES

from .pes import make_driver
from .run import RunSettings, is_finished, run_simulation

#: steps of 0.5 fs; frames every 2 steps (1 fs); equilibration steps precede each run
DEMO = {
    "quick": {"structure": "nh3_phase_i.xyz", "equilibration": 1000, "classical": 10000, "pimd": 4000, "beads": 8},
    "production": {"structure": "nh3_phase_i_2x2x2.xyz", "equilibration": 4000, "classical": 40000, "pimd": 40000, "beads": 32},
}


def relaxed_start(structure: Path, model: Path, path: Path) -> Path:
    """``structure`` relaxed with the model at fixed cell, written once to ``path`` (i-PI xyz)."""
    if not path.exists():
        start = relaxed(read_frames(structure)[0], LegatoCalculator(potential=ModelPotential.from_file(model)))
        path.parent.mkdir(parents=True, exist_ok=True)
        write_structure(path.with_suffix(".tmp"), start, f"{structure.name} relaxed with {model.name}").replace(path)
    return path


def demo_runs(output, model, temperature: float = 150.0, production: bool = False, compile_model: bool = False, device: str = "cpu", progress: bool = True, log=print) -> dict:
    """Run (or reuse) the demo's classical and TRPMD runs in ``output``; returns their run
    folders, ``{"classical": ..., "pimd": ...}``. ``log`` gets one line per run.

    Raises ValueError (a folder of another demo, bad settings), RuntimeError (i-PI or the
    relaxation failed) or FileNotFoundError, each with a one-line message.
    """
    output, model = Path(output), Path(model)
    torch_device(device)
    if not temperature > 0:
        raise ValueError(f"--temperature {temperature}: give a positive value")
    plan = DEMO["production" if production else "quick"]
    if (output / "classical").exists() and not (output / "study.json").exists():
        raise ValueError(f"{output} holds runs of an older legato demo (no relaxed, equilibrated start): -o a new folder, or delete it")
    record_study(output, {"model_sha256": file_sha256(model), "temperature": temperature, "production": production, "start": "relaxed, equilibrated"})
    start = relaxed_start(TEMPLATES / plan["structure"], model, output / "start.xyz")

    def factory(structure):
        return make_driver(structure, model, compile_model=compile_model, device=device)

    runs = []
    for name, template, beads, seed in (("classical", "nh3_solid_classical_nvt.xml", 1, 1), ("pimd", "nh3_solid_trpmd.xml", plan["beads"], 2)):
        equilibration = output / f"{name}_equilibration"
        common = dict(nbeads=beads, temperature=temperature, structure=start)
        runs.append((equilibration, "equilibrate_nvt.xml", RunSettings(**common, total_steps=plan["equilibration"], seed=seed + 100)))
        runs.append((output / name, template, RunSettings(**common, total_steps=plan[name], stride=2, seed=seed, start=equilibration / "RESTART")))
    for run_dir, template, settings in runs:
        if is_finished(run_dir):
            log(f"{run_dir.name}: already finished in {run_dir}")
            continue
        log(f"{run_dir.name}: {template}, {settings.nbeads} bead(s), {settings.total_steps} steps at {temperature:.0f} K -> {run_dir}")
        run_simulation(TEMPLATES / template, run_dir, factory, settings, progress=progress)
    return {"classical": output / "classical", "pimd": output / "pimd"}
