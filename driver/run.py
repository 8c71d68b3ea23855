"""`legato run`: i-PI and the driver(s) together, with progress and resume.

The run directory holds i-PI's input (``input.xml``, written from a template
with the requested parameters), the structure, all outputs and i-PI's
``RESTART``. Running again in the same directory resumes from ``RESTART``, or after a
hard kill (no ``RESTART``) from i-PI's last periodic checkpoint (:func:`recover_checkpoint`).
i-PI and any extra driver processes die with this process (PR_SET_PDEATHSIG),
so a killed run leaves no orphans; the socket name is derived from the run
directory, so parallel runs do not collide.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from legato.fileio import is_ipi_xyz, read_structures, write_structure

PR_SET_PDEATHSIG = 1


def _die_with_parent():  # runs in the child between fork and exec
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class RunSettings:
    """What `legato run` may change in a template (None = keep the template's)."""

    nbeads: int | None = None
    temperature: float | None = None  # K
    total_steps: int | None = None
    timestep: float | None = None  # fs
    seed: int | None = None
    stride: int | None = None  # trajectory stride (steps)
    structure: Path | None = None  # initial structure instead of the template's (i-PI xyz, or any file ASE reads, with a cell)
    start: Path | None = None  # i-PI checkpoint (e.g. an equilibration's RESTART): its bead positions and momenta start the run
    #: ring-polymer contraction: the full model sees this many beads (i-PI interpolates its forces and dipoles onto all)
    contract: int | None = None
    #: multiple time steps: inner steps of the cheap reference force per outer (the template's) time step
    mts: int | None = None

    @property
    def fast_path(self) -> bool:
        """Whether the run splits forces into a cheap reference and a full-model correction."""
        return bool(self.contract) or (self.mts or 1) > 1


def socket_name(run_dir: Path) -> str:
    return "legato-" + hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:10]


#: the forcefield (and socket suffix) of the cheap reference model in a contracted / MTS run
FAST = "fast"


def fast_socket_name(run_dir: Path) -> str:
    """The unix socket of a contracted / MTS run's cheap reference driver."""
    return f"{socket_name(run_dir)}-{FAST}"


def _set_text(element, text) -> None:
    element.text = f" {text} "


def write_input(template: Path, run_dir: Path, settings: RunSettings, inet_port: int | None = None, n_drivers: int = 1, inet_host: str = "localhost") -> tuple[Path, Path]:
    """Write ``run_dir/input.xml`` from ``template``; returns (input, structure).

    The beads of a step are split into ``n_drivers`` equal batches, one per driver.
    """
    tree = ET.parse(template)
    root = tree.getroot()
    init = root.find("system/initialize")
    file_el = init.find("file")
    structure_src = Path(settings.structure).resolve() if settings.structure else (template.parent / file_el.text.strip()).resolve()
    if not structure_src.exists():
        raise FileNotFoundError(f"{structure_src}: the template's initial structure is missing")
    if is_ipi_xyz(structure_src):
        structure = run_dir / structure_src.name
        shutil.copy(structure_src, structure)
    else:  # CIF, extxyz, ...: i-PI reads its own xyz format (cell in the comment line)
        atoms = read_structures(structure_src)[-1]
        if atoms.cell.volume < 1e-6:
            raise ValueError(f"{structure_src}: the structure has no cell; i-PI needs one (for a molecule, a box larger than it plus the model's cutoff, with --no-periodic)")
        structure = write_structure(run_dir / (structure_src.stem + ".xyz"), atoms, f"from {structure_src.name}")
    _set_text(file_el, structure.name)

    ff = root.find("ffsocket")
    if inet_port is None:
        ff.set("mode", "unix")
        _set_text(ff.find("address"), socket_name(run_dir))
        port = ff.find("port")
        if port is not None:
            ff.remove(port)
    else:
        ff.set("mode", "inet")
        _set_text(ff.find("address"), inet_host)
        port = ff.find("port")
        if port is None:
            port = ET.SubElement(ff, "port")
        _set_text(port, inet_port)
    if settings.nbeads is not None:
        init.set("nbeads", str(settings.nbeads))
    nbeads = int(init.get("nbeads", "1"))
    full_beads = settings.contract or nbeads
    batch = ff.find("batch_size")
    if batch is not None:
        _set_text(batch, max(-(-full_beads // n_drivers), 1))
    if settings.fast_path:
        _add_fast_path(root, ff, run_dir, nbeads, settings.contract, settings.mts or 1)
    if settings.temperature is not None:
        _set_text(root.find("system/ensemble/temperature"), settings.temperature)
        vel = init.find("velocities")
        if vel is not None:
            _set_text(vel, settings.temperature)
    if settings.start is not None:
        _start_from_checkpoint(init, Path(settings.start), run_dir)
    if settings.total_steps is not None:
        _set_text(root.find("total_steps"), settings.total_steps)
    if settings.timestep is not None:
        _set_text(root.find("system/motion/dynamics/timestep"), settings.timestep)
    if settings.seed is not None:
        _set_text(root.find("prng/seed"), settings.seed)
    if settings.stride is not None:
        for traj in root.findall("output/trajectory"):
            traj.set("stride", str(settings.stride))
    path = run_dir / "input.xml"
    tree.write(path)
    return path, structure


def check_fast_path(nbeads: int, contract: int | None, mts: int | None) -> None:
    """ValueError (one line, naming the option) for a contraction or MTS i-PI cannot run sensibly."""
    if contract is not None:
        if contract < 1 or contract > nbeads:
            raise ValueError(f"--contract {contract}: give 1 to {nbeads} beads for the full model (the run has {nbeads})")
        if nbeads % contract:
            raise ValueError(f"--contract {contract}: give a divisor of the {nbeads} beads (e.g. {max(d for d in range(1, contract + 1) if nbeads % d == 0)})")
    if mts is not None and mts < 1:
        raise ValueError(f"--mts {mts}: give at least 1 inner step per outer step")


def _add_fast_path(root, ff, run_dir: Path, nbeads: int, contract: int | None, mts: int) -> None:
    """Ring-polymer contraction and multiple time steps with a cheap reference force, as i-PI
    does them (Markland & Manolopoulos 2008; Kapil, VandeVondele & Ceriotti 2016): the cheap
    force on all beads at the inner step, the correction (full - cheap) on ``contract`` beads
    at the outer step. Dipoles come from the full model and are interpolated onto all beads
    (``interpolate_extras``); the cheap driver sends no extras, so nothing overwrites them."""
    check_fast_path(nbeads, contract, mts)
    fast = ET.fromstring(ET.tostring(ff))
    fast.set("name", FAST)
    fast.set("mode", "unix")
    _set_text(fast.find("address"), fast_socket_name(run_dir))
    if fast.find("port") is not None:
        fast.remove(fast.find("port"))
    if fast.find("batch_size") is not None:
        _set_text(fast.find("batch_size"), nbeads)
    root.insert(list(root).index(ff) + 1, fast)

    forces = root.find("system/forces")
    full_name = forces.find("force").get("forcefield")
    for force in list(forces):
        forces.remove(force)
    outer, inner = ("[1, 0]", "[0, 1]") if mts > 1 else (None, None)

    def component(forcefield, weight, beads, mts_weights, extras=None):
        force = ET.SubElement(forces, "force", forcefield=forcefield, weight=str(weight))
        if beads and beads != nbeads:
            force.set("nbeads", str(beads))
        if mts_weights:
            _set_text(ET.SubElement(force, "mts_weights"), mts_weights)
        if extras:
            _set_text(ET.SubElement(force, "interpolate_extras"), extras)

    component(full_name, 1, contract, outer, extras="[dipole]")
    component(FAST, -1, contract, outer)
    component(FAST, 1, nbeads, inner)
    if mts > 1:
        dynamics = root.find("system/motion/dynamics")
        nmts = dynamics.find("nmts")
        if nmts is None:
            nmts = ET.Element("nmts")
            dynamics.insert(list(dynamics).index(dynamics.find("timestep")) + 1, nmts)
        _set_text(nmts, f"[1, {mts}]")


def _start_from_checkpoint(init, checkpoint: Path, run_dir: Path) -> None:
    """Initialise bead positions and momenta from ``checkpoint`` (the structure file still names the atoms for the driver)."""
    if not checkpoint.exists():
        raise FileNotFoundError(f"{checkpoint}: no such i-PI checkpoint to start from (run the equilibration first)")
    beads = ET.parse(checkpoint).getroot().find("system/beads")
    if beads is None or int(beads.get("nbeads", "1")) != int(init.get("nbeads", "1")):
        raise ValueError(f"{checkpoint}: not an i-PI checkpoint with {init.get('nbeads', '1')} bead(s); start from a run with the same number of beads")
    shutil.copy(checkpoint, run_dir / "start.chk")
    vel = init.find("velocities")
    if vel is not None:
        init.remove(vel)
    # a second <file>, after the structure's: i-PI takes positions, cell and momenta from it
    # (<momenta mode='chk'> alone fails in i-PI 3.x); the first <file> still names the atoms
    _set_text(ET.SubElement(init, "file", mode="chk"), "start.chk")


def template_beads(template: Path) -> int:
    """The number of beads an i-PI input starts with (``initialize nbeads``)."""
    return int(ET.parse(template).getroot().find("system/initialize").get("nbeads", "1"))


def total_steps(input_xml: Path) -> int:
    return int(ET.parse(input_xml).getroot().find("total_steps").text)


def last_properties(out_file: Path) -> dict | None:
    """The last row of i-PI's properties file as {column name: value}."""
    from legato.fileio import TrajectoryError, read_properties

    if not out_file.exists():
        return None
    try:
        columns = read_properties(out_file)
    except (TrajectoryError, ValueError):  # no rows yet, or a row being written
        return None
    return {name: values[-1] for name, values in columns.items()}


class _Progress(threading.Thread):
    """Polls i-PI's properties file and updates a tqdm bar (steps, ps, K, conserved)."""

    def __init__(self, out_file: Path, steps: int, enabled: bool):
        super().__init__(daemon=True)
        from tqdm import tqdm

        self.out_file = out_file
        self.bar = tqdm(total=steps, desc="i-PI", unit="step", disable=not enabled, file=sys.stderr)
        self.stop = threading.Event()

    def run(self):
        while not self.stop.wait(1.0):
            self.update()

    def update(self):
        row = last_properties(self.out_file)
        if row is None:
            return
        step = int(row.get("step", 0))
        self.bar.n = step
        post = {}
        for key, label, fmt in (("time", "ps", ".3f"), ("temperature", "T/K", ".0f"), ("conserved", "E_cons/eV", ".4f")):
            if key in row:
                post[label] = format(row[key], fmt)
        self.bar.set_postfix(post, refresh=False)
        self.bar.refresh()

    def close(self):
        self.stop.set()
        self.update()
        self.bar.close()


def run_simulation(
    template: Path,
    run_dir: Path,
    driver_factory,
    settings: RunSettings | None = None,
    n_drivers: int = 1,
    extra_driver_cmd: list[str] | None = None,
    progress: bool = True,
    fast_driver_factory=None,
    listen: str | None = None,
) -> Path:
    """Run (or resume) i-PI in ``run_dir`` with the in-process driver from ``driver_factory(structure)``.

    ``n_drivers > 1`` adds ``extra_driver_cmd`` processes (``legato serve ...``) on
    an inet socket. A contracted or multiple-time-step run (``settings.contract``,
    ``settings.mts``) serves the cheap reference from ``fast_driver_factory(structure)``
    in a thread on its own socket. ``listen="HOST:PORT"`` puts i-PI's inet socket there for
    drivers on other machines (``legato serve ... --inet HOST:PORT``): the beads go out in
    ``n_drivers`` batches, this process serves one of them and starts no helpers, and drivers
    may join and leave at any time. Returns the run directory. Raises RuntimeError if i-PI fails.
    """
    from legato.driver.client import serve

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    restart = run_dir / "RESTART"
    if recover_checkpoint(run_dir):
        print(f"{run_dir}: no RESTART, or an older one (a hard kill?): resuming from i-PI's last periodic checkpoint", file=sys.stderr)
    if restart.exists() and is_finished(run_dir):  # i-PI would refuse to start: nothing is left to run
        print(f"{run_dir}: already finished ({total_steps(restart)} steps): nothing to run (a new --output starts another run)", file=sys.stderr)
        return run_dir
    host, connect_host = "localhost", "localhost"
    if listen is not None:
        host, inet_port = parse_address(listen)
        connect_host = "127.0.0.1" if host in ("0.0.0.0", "") else host  # i-PI binds to all interfaces: this process connects locally
    else:
        inet_port = _free_port() if n_drivers > 1 else None
    if restart.exists():
        input_xml = run_dir / "input.xml"
        structure = run_dir / ET.parse(input_xml).getroot().find("system/initialize/file").text.strip()
        if inet_port is not None or ET.parse(restart).getroot().find("ffsocket").get("mode") == "inet":
            inet_port = _rewrite_restart_port(restart, inet_port or _free_port(), host)
        ipi_args, steps = [restart.name], total_steps(restart)
    else:
        input_xml, structure = write_input(Path(template), run_dir, settings or RunSettings(), inet_port, n_drivers, inet_host=host)
        ipi_args, steps = [input_xml.name], total_steps(input_xml)
    for name in ([socket_name(run_dir)] if inet_port is None else []) + [fast_socket_name(run_dir)]:
        Path(f"/tmp/ipi_{name}").unlink(missing_ok=True)  # stale sockets of a killed run

    uses_fast = any(f.get("name") == FAST for f in ET.parse(restart if restart.exists() else input_xml).getroot().findall("ffsocket"))
    if uses_fast and fast_driver_factory is None:
        raise ValueError(f"{run_dir}: a contracted or multiple-time-step run needs the cheap reference model too (--fast-model)")
    driver = driver_factory(structure)
    fast_driver = fast_driver_factory(structure) if uses_fast else None
    ipi_log = open(run_dir / "ipi.log", "a")
    ipi = subprocess.Popen(
        [sys.executable, "-m", "legato.driver.ipi_main", *ipi_args], cwd=run_dir, stdout=ipi_log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
    )
    helpers = []
    if inet_port is not None:
        _wait_until_listening(ipi, inet_port, run_dir / "ipi.log", timeout=120)
    if n_drivers > 1 and listen is None:
        for _ in range(n_drivers - 1):
            cmd = [*extra_driver_cmd, "-s", str(Path(structure).resolve()), "--inet", f"localhost:{inet_port}"]
            # cwd=run_dir: `python -m` puts the cwd first on sys.path, and a repository root's
            # legato/ folder there would shadow the installed package
            helpers.append(subprocess.Popen(cmd, cwd=run_dir, stdout=ipi_log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent))
    if helpers:
        _wait_for_clients(run_dir / "ipi.log", len(helpers), timeout=120)
    bar = _Progress(run_dir / "simulation.out", steps, progress)
    bar.start()
    fast_thread = None
    try:
        try:
            ipi_died = lambda: ipi.poll() is not None  # noqa: E731
            if fast_driver is not None:
                fast_thread = _ServingThread(fast_driver, fast_socket_name(run_dir), ipi_died)
                fast_thread.start()
            if inet_port is None:
                outcome = serve(driver, socket_name(run_dir), unix=True, connect_wait=60, give_up=ipi_died)
            else:
                outcome = serve(driver, connect_host, inet_port, unix=False, connect_wait=60, give_up=ipi_died)
        except TimeoutError as exc:
            if ipi.poll() is not None:  # i-PI died before opening its socket: say why, not "no server"
                raise RuntimeError(f"i-PI exited (code {ipi.returncode}) before the driver connected: {_last_line(run_dir / 'ipi.log')}") from exc
            raise
        code = ipi.wait(timeout=120)
        if fast_thread is not None:
            fast_thread.join(timeout=60)
            if fast_thread.error is not None:
                raise RuntimeError(f"the cheap reference driver failed: {fast_thread.error}") from fast_thread.error
    finally:
        bar.close()
        for proc in [ipi, *helpers]:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        ipi_log.close()
    if outcome != "exit" or code != 0:
        raise RuntimeError(f"i-PI stopped before the end (exit code {code}); see {run_dir / 'ipi.log'}; run again to resume")
    return run_dir


class _ServingThread(threading.Thread):
    """A driver served on a unix socket beside the main one (the cheap reference of a fast-path run)."""

    def __init__(self, driver, name: str, give_up):
        super().__init__(daemon=True)
        self.driver, self.name_, self.give_up = driver, name, give_up
        self.error: BaseException | None = None

    def run(self):
        from legato.driver.client import serve

        try:
            serve(self.driver, self.name_, unix=True, connect_wait=60, give_up=self.give_up)
        except BaseException as exc:  # reported by run_simulation after i-PI ends
            self.error = exc


def _last_line(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return f"{lines[-1] if lines else '(empty log)'} (see {log})"


def _wait_for_clients(log: Path, n: int, timeout: float) -> None:
    """Wait until i-PI logged ``n`` client handshakes, so every driver gets work from step 0."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and log.read_text(errors="replace").count("Handshaking was successful") >= n:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the extra driver processes did not connect to i-PI within {timeout:.0f} s; see {log}")


def _wait_until_listening(ipi: subprocess.Popen, port: int, log: Path, timeout: float) -> None:
    """Wait until THIS i-PI process listens on ``port``, so no driver joins another run's i-PI
    that happens to hold the same port (its own i-PI would then die on bind). Linux /proc."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ipi.poll() is not None:
            raise RuntimeError(f"i-PI exited (code {ipi.returncode}) before it opened port {port}: {_last_line(log)}")
        if _listening_inodes(port) & _socket_inodes(ipi.pid):
            return
        time.sleep(0.2)
    raise RuntimeError(f"i-PI did not open port {port} within {timeout:.0f} s; see {log}")


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                inodes.add(fields[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _rewrite_restart_port(restart: Path, port: int, host: str = "localhost") -> int:
    tree = ET.parse(restart)
    ff = tree.getroot().find("ffsocket")
    _set_text(ff.find("port"), port)
    _set_text(ff.find("address"), host)
    tree.write(restart)
    return port


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); ValueError naming the form for anything else."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--listen {address}: give HOST:PORT, e.g. 0.0.0.0:31415 (all interfaces) or a node's name and a free port")
    return host, int(port)


_STEP = re.compile(r"Step:\s*(\d+)")


def _cut_after(path: Path, step: int) -> None:
    """Drop the records of an i-PI output file written after ``step``: xyz frames and extras
    (by the ``Step:`` of their headers), properties rows (by their first column, the step);
    a frame cut short by the kill goes too. Files of other kinds stay as they are."""
    lines = path.read_text().splitlines(keepends=True)
    if not lines:
        return
    first = lines[0].strip()
    if first.isdigit():  # xyz: atom count, comment with the step, atoms
        kept, i = [], 0
        while i < len(lines) and lines[i].strip().isdigit():
            frame = lines[i : i + int(lines[i]) + 2]
            match = _STEP.search(frame[1]) if len(frame) > 1 else None
            if match is None and i == 0:
                return  # xyz without i-PI's step in its comments: not ours to cut
            if match is None or len(frame) < int(lines[i]) + 2 or int(match.group(1)) > step:
                break
            kept += frame
            i += len(frame)
    elif first.startswith("#") and _STEP.search(first):  # extras: a "#EXTRAS(...)# Step: N" header per record
        kept, keep = [], True
        for line in lines:
            match = _STEP.search(line) if line.lstrip().startswith("#") else None
            if match:
                keep = int(match.group(1)) <= step
            if keep:
                kept.append(line)
    elif first.startswith("#") and any(re.match(r"#\s*column\s+1\s+-->\s*step\b", line) for line in lines if line.startswith("#")):
        # properties with the step first: column comments, then one row per output step
        kept = [line for line in lines if line.startswith("#") or not line.strip() or int(float(line.split()[0])) <= step]
    else:
        return
    if len(kept) < len(lines):  # a clean RESTART leaves nothing to cut: no rewrite of long outputs
        path.write_text("".join(kept))


def _state_step(path) -> int:
    """The step of an i-PI state file (RESTART or checkpoint); i-PI leaves ``<step>`` out at step 0."""
    element = ET.parse(path).getroot().find("step")
    return int(element.text) if element is not None else 0


def recover_checkpoint(run_dir: Path) -> bool:
    """Make ``RESTART`` the latest state a killed run left: i-PI writes RESTART when it stops
    cleanly, and a periodic checkpoint (``<checkpoint stride=...>``, e.g. ``simulation.restart``)
    as it runs, so after a hard kill RESTART is missing, or stale where the run had itself
    resumed from one. The later of the two becomes RESTART, and every output record past
    its step is cut, since i-PI appends from there. Returns whether the checkpoint was taken."""
    run_dir = Path(run_dir)
    restart, xml = run_dir / "RESTART", run_dir / "input.xml"
    if not xml.exists():
        return False
    output = ET.parse(xml).getroot().find("output")
    prefix = output.get("prefix", "i-pi").strip() if output is not None else "i-pi"
    element = output.find("checkpoint") if output is not None else None
    checkpoint = run_dir / f"{prefix}.{element.get('filename', 'restart').strip()}" if element is not None else None
    states = [path for path in (restart, checkpoint) if path is not None and path.exists()]
    if not states:
        return False
    step = {path: _state_step(path) for path in states}
    latest = max(states, key=lambda path: step[path])  # RESTART on a tie
    for path in run_dir.glob(f"{prefix}.*"):
        if path != checkpoint and path.is_file():
            _cut_after(path, step[latest])
    if latest == restart:
        return False
    shutil.copy(checkpoint, restart)
    return True


def is_finished(run_dir: Path) -> bool:
    """True when the run's properties file reached its input's total_steps."""
    run_dir = Path(run_dir)
    out, xml = run_dir / "simulation.out", run_dir / "input.xml"
    if not (out.exists() and xml.exists()):
        return False
    steps = steps_in(out)
    return len(steps) > 0 and steps[-1] >= total_steps(xml) - 1


def steps_in(out_file: Path) -> np.ndarray:
    """The step column of i-PI's properties file (for completeness checks)."""
    rows = [line.split()[0] for line in open(out_file) if line.strip() and not line.startswith("#")]
    return np.array([int(float(r)) for r in rows])
