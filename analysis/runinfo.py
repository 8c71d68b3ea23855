"""What an i-PI run directory holds: time step, strides, temperature, beads, files."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from ipi.utils.units import unit_to_internal, unit_to_user


@dataclass
class RunInfo:
    path: Path
    prefix: str
    timestep_fs: float
    temperature: float  # K
    nbeads: int
    strides: dict  # trajectory filename -> stride (steps)

    def dt(self, kind: str) -> float:
        """Time between saved frames of trajectory ``kind`` (fs)."""
        return self.timestep_fs * self.strides[kind]


def _value(element, user_unit: str, kind: str) -> float:
    """An i-PI input value (default unit: atomic units) in ``user_unit``."""
    value = unit_to_internal(kind, element.get("units", "atomic_unit"), float(element.text))
    return unit_to_user(kind, user_unit, value)


def read_run(run_dir) -> RunInfo:
    """Parse ``run_dir/input.xml`` (written by `legato run`, or a user's i-PI input)."""
    run_dir = Path(run_dir)
    xml = run_dir / "input.xml"
    if not xml.exists():
        candidates = sorted(run_dir.glob("*.xml"))
        if not candidates:
            raise FileNotFoundError(f"{run_dir}: no i-PI input (input.xml) to read the time step from")
        xml = candidates[0]
    root = ET.parse(xml).getroot()
    output = root.find("output")
    timestep = root.find("system/motion/dynamics/timestep")
    temperature = root.find("system/ensemble/temperature")
    init = root.find("system/initialize")
    return RunInfo(
        path=run_dir,
        prefix=output.get("prefix", "simulation"),
        timestep_fs=_value(timestep, "femtosecond", "time"),
        temperature=_value(temperature, "kelvin", "temperature") if temperature is not None else float("nan"),
        nbeads=int(init.get("nbeads", "1")),
        strides={t.get("filename"): int(t.get("stride", "1")) for t in output.findall("trajectory")},
    )
