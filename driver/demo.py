"""The runs of `legato demo`: solid ammonia relaxed with the model, then classical MD and
TRPMD through i-PI, each after its own equilibration (strong PILE-L thermostat,
``equilibrate_nvt.xml``). Their spectra and the NQE table come from
:func:`legato.analysis.pipeline.compare_runs`.

By default every run takes the fast path of `legato run --contract 4 --mts 4`: the cheap
reference model on all beads at 0.5 fs, the full model's correction on 4 contracted beads
at 2 fs (classical MD: multiple time steps only). ``fast_model=None`` runs the full model
on every bead at every 0.5 fs step instead.

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

#: simulated times (ps); equilibration precedes each run
DEMO = {
    "quick": {"structure": "nh3_phase_i.xyz", "equilibration": 0.5, "classical": 5.0, "pimd": 2.0, "beads": 32},
    "production": {"structure": "nh3_phase_i_2x2x2.xyz", "equilibration": 2.0, "classical": 20.0, "pimd": 20.0, "beads": 32},
}
#: the full model's time step (fs) and the trajectory frame spacing (fs)
TIMESTEP, FRAME_SPACING = 0.5, 2.0
#: the fast path: beads the full model sees, and cheap-model steps per full-model step
CONTRACT, MTS = 4, 4


def relaxed_start(structure: Path, model: Path, path: Path) -> Path:
    """``structure`` relaxed with the model at fixed cell, written once to ``path`` (i-PI xyz)."""
    if not path.exists():
        start = relaxed(read_frames(structure)[0], LegatoCalculator(potential=ModelPotential.from_file(model)))
        path.parent.mkdir(parents=True, exist_ok=True)
        write_structure(path.with_suffix(".tmp"), start, f"{structure.name} relaxed with {model.name}").replace(path)
    return path


def run_settings(plan: dict, name: str, beads: int, fast: bool, **common) -> RunSettings:
    """The i-PI settings of the demo run ``name`` (``equilibration``, ``classical``, ``pimd``)."""
    mts = MTS if fast else 1
    contract = min(CONTRACT, beads) if fast and beads > 1 else None
    timestep = TIMESTEP * mts
    return RunSettings(
        nbeads=beads, timestep=timestep, total_steps=int(round(plan[name] * 1000 / timestep)),
        stride=max(1, int(round(FRAME_SPACING / timestep))), contract=contract, mts=mts if fast else None, **common,
    )


def demo_runs(output, model, temperature: float = 150.0, production: bool = False, compile_model: bool = False, device: str = "cpu", progress: bool = True, log=print, fast_model=None) -> dict:
    """Run (or reuse) the demo's classical and TRPMD runs in ``output``; returns their run
    folders, ``{"classical": ..., "pimd": ...}``. ``log`` gets one line per run.
    ``fast_model``: the cheap reference of the fast path (None: the full model on every bead
    at every step).

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
    fast = fast_model is not None
    study = {"model_sha256": file_sha256(model), "temperature": temperature, "production": production, "start": "relaxed, equilibrated"}
    study["fast_path"] = {"model_sha256": file_sha256(fast_model), "contract": CONTRACT, "mts": MTS} if fast else None
    record_study(output, study)
    start = relaxed_start(TEMPLATES / plan["structure"], model, output / "start.xyz")

    def factory(structure):
        return make_driver(structure, model, compile_model=compile_model, device=device)

    def fast_factory(structure):
        return make_driver(structure, fast_model, device=device, dipoles=False)

    runs = []
    for name, template, beads, seed in (("classical", "nh3_solid_classical_nvt.xml", 1, 1), ("pimd", "nh3_solid_trpmd.xml", plan["beads"], 2)):
        equilibration = output / f"{name}_equilibration"
        common = dict(temperature=temperature, structure=start)
        runs.append((equilibration, "equilibrate_nvt.xml", run_settings(plan, "equilibration", beads, fast, **common, seed=seed + 100)))
        runs.append((output / name, template, run_settings(plan, name, beads, fast, **common, seed=seed, start=equilibration / "RESTART")))
    for run_dir, template, settings in runs:
        if is_finished(run_dir):
            log(f"{run_dir.name}: already finished in {run_dir}")
            continue
        scheme = ""
        if settings.fast_path:
            scheme = f" (full model on {settings.contract or settings.nbeads} bead(s) every {settings.timestep:g} fs, cheap model every {settings.timestep / settings.mts:g} fs)"
        log(f"{run_dir.name}: {template}, {settings.nbeads} bead(s), {settings.total_steps} steps of {settings.timestep:g} fs at {temperature:.0f} K{scheme} -> {run_dir}")
        run_simulation(TEMPLATES / template, run_dir, factory, settings, progress=progress, fast_driver_factory=fast_factory if settings.fast_path else None)
    return {"classical": output / "classical", "pimd": output / "pimd"}
