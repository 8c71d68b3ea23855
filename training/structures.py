"""Training structures: liquid boxes, thermally displaced sets, paths between minima,
turned molecules; and :func:`structure_set`, the sets `legato structures` writes.

The crystal itself (ammonia phase I), bonds and molecules come from :mod:`legato.geometry`.
"""

from __future__ import annotations

from pathlib import Path

import ase
import numpy as np
from ase.build import molecule
from ase.data import atomic_masses
from ase.geometry import find_mic
from scipy.spatial.transform import Rotation

from legato.fileio import read_structures
from legato.geometry import ammonia_phase_i, closest_approach, molecules_of, order_by_species
from legato.geometry import min_distance as geometry_min_distance
from legato.units import AVOGADRO


def molecular_liquid(
    name: str, n_molecules: int, density_g_cm3: float, seed: int = 0, min_distance: float = 1.7, max_tries: int = 20000
) -> ase.Atoms:
    """Randomly oriented molecules (ASE ``molecule(name)``) in a cubic box at a density.

    Molecules are placed so that no two atoms of different molecules are closer
    than ``min_distance`` A; raises ``RuntimeError`` if the box is too full.
    """
    template = molecule(name)
    mass_g = template.get_masses().sum() / AVOGADRO
    box = (n_molecules * mass_g / density_g_cm3) ** (1 / 3) * 1e8  # cm -> A
    rng = np.random.default_rng(seed)
    placed: list[np.ndarray] = []
    symbols: list[str] = []
    cell = np.eye(3) * box
    tries = 0
    while len(placed) < n_molecules:
        tries += 1
        if tries > max_tries:
            raise RuntimeError(f"could not place {n_molecules} {name} at {density_g_cm3} g/cm3; lower min_distance or density")
        # a uniformly random rotation as Rotation.random draws it, but with the quaternion
        # scalar first, so a seed gives the boxes it gave before scipy did this
        rot = Rotation.from_quat(rng.normal(size=4), scalar_first=True).as_matrix()
        pos = (template.positions - template.get_center_of_mass()) @ rot.T + rng.random(3) * box
        if placed and geometry_min_distance(pos, cell, others=np.concatenate(placed)) < min_distance:
            continue
        placed.append(pos)
        symbols.extend(template.get_chemical_symbols())
    atoms = ase.Atoms(symbols, positions=np.concatenate(placed), cell=cell, pbc=True)
    return order_by_species(atoms)


def molecular_cluster(
    name: str, n_molecules: int, vacuum: float = 9.0, seed: int = 0, min_distance: float = 1.7, max_tries: int = 20000, min_box: float = 10.0
) -> ase.Atoms:
    """A gas-phase cluster of ``n_molecules`` randomly oriented molecules (ASE ``molecule(name)``)
    in contact, centred in a cubic box with at least ``vacuum`` A between periodic images
    and at least ``min_box`` A across (the converged protocol labels thinner cells in
    supercells); ``n_molecules=1``: an isolated molecule.

    Grown one molecule at a time: each new one sits beside a random earlier one, its centre
    of mass 1.2-2.2 molecular radii beyond ``min_distance`` from that one's (NH3: N-N 2.9-3.9 A,
    hydrogen-bond and van der Waals contacts), and no two atoms of different molecules
    closer than ``min_distance`` A. The dilute limit of a data set: the molecule's own dipole
    and the pair interactions that condensed frames mix with everything else.
    """
    template = molecule(name)
    body = template.positions - template.get_center_of_mass()
    radius = float(np.linalg.norm(body, axis=1).max())
    rng = np.random.default_rng(seed)
    placed = [body @ Rotation.random(random_state=rng).as_matrix().T]
    centres = [np.zeros(3)]
    tries = 0
    while len(placed) < n_molecules:
        tries += 1
        if tries > max_tries:
            raise RuntimeError(f"could not place {n_molecules} {name} in a cluster; lower min_distance")
        direction = rng.normal(size=3)
        distance = min_distance + radius * rng.uniform(1.2, 2.2)
        centre = centres[rng.integers(len(centres))] + distance * direction / np.linalg.norm(direction)
        pos = body @ Rotation.random(random_state=rng).as_matrix().T + centre
        if np.linalg.norm(np.concatenate(placed)[:, None] - pos[None], axis=-1).min() < min_distance:
            continue
        placed.append(pos)
        centres.append(centre)
    positions = np.concatenate(placed)
    extent = positions.max(axis=0) - positions.min(axis=0)
    box = max(float(extent.max() + vacuum), min_box)
    atoms = ase.Atoms(list(template.get_chemical_symbols()) * n_molecules, positions=positions - positions.min(axis=0) + (box - extent) / 2, cell=np.eye(3) * box, pbc=True)
    atoms.info = {"structure": f"{name} cluster, {n_molecules} molecule(s)"}
    return order_by_species(atoms)


def rattled(atoms: ase.Atoms, n: int, stdev: float = 0.05, seed: int = 0, strain: float = 0.0, min_distance: float = 0.75) -> list[ase.Atoms]:
    """``n`` copies with Gaussian displacements and optional isotropic strain.

    ``stdev`` (A) is that of a hydrogen; heavier atoms get stdev * (m_H / m)^(1/4),
    the scaling of zero-point amplitudes. A draw that brings two atoms closer
    than ``min_distance`` A (far outside thermal motion) is redrawn.
    """
    rng = np.random.default_rng(seed)
    frames = []
    while len(frames) < n:
        new = atoms.copy()
        if strain:
            new.set_cell(new.cell * (1 + rng.uniform(-strain, strain)), scale_atoms=True)
        scale = stdev * (atomic_masses[1] / new.get_masses()) ** 0.25
        new.positions += rng.normal(size=new.positions.shape) * scale[:, None]
        if closest_approach(new) < min_distance:
            continue
        frames.append(new)
    return frames


def displaced_set(sources: list[ase.Atoms], n: int, stdev: float = 0.03, seed: int = 0, repeat: int = 1, strain: float = 0.0) -> list[ase.Atoms]:
    """``n`` thermally displaced frames, taking the ``sources`` in turn (see ``rattled``).

    ``repeat``: each source is first tiled ``repeat`` times along each cell vector, so every
    image gets its own displacements (a large cell for the Brillouin-zone-converged labels,
    with ``repeat**3`` times the environments of the source). ``strain``: each frame's cell
    is scaled by a random factor within 1 +- strain (positions with it).
    """
    frames = []
    for k in range(n):
        source = sources[k % len(sources)]
        frames.append(rattled(source.repeat(repeat) if repeat > 1 else source, 1, stdev=stdev, seed=seed + k, strain=strain)[0])
    return frames


def cluster_set(name: str, n: int, n_molecules: int, vacuum: float = 9.0, stdev: float = 0.03, seed: int = 0, min_box: float = 10.0) -> list[ase.Atoms]:
    """``n`` clusters of ``n_molecules`` (:func:`molecular_cluster`), each thermally displaced."""
    try:
        clusters = [molecular_cluster(name, n_molecules, vacuum=vacuum, seed=seed + k, min_box=min_box) for k in range(n)]
    except KeyError:
        raise ValueError(f"unknown molecule '{name}': give a name ase.build.molecule knows (e.g. H2O, NH3, CH4)") from None
    frames = displaced_set(clusters, n, stdev=stdev, seed=seed)
    for frame, cluster in zip(frames, clusters):
        frame.info = dict(cluster.info)
    return frames


def liquid_set(name: str, n: int, n_molecules: int, density_g_cm3: float, stdev: float = 0.03, seed: int = 0) -> list[ase.Atoms]:
    """``n`` liquid boxes of any ASE molecule (``molecular_liquid``), each thermally displaced."""
    try:
        boxes = [molecular_liquid(name, n_molecules, density_g_cm3, seed=seed + k) for k in range(n)]
    except KeyError:
        raise ValueError(f"unknown molecule '{name}': give a name ase.build.molecule knows (e.g. H2O, NH3, CH4)") from None
    return displaced_set(boxes, n, stdev=stdev, seed=seed)


def path_between(start: ase.Atoms, end: ase.Atoms, n: int, stdev: float = 0.03, overshoot: float = 0.25, seed: int = 0) -> list[ase.Atoms]:
    """``n`` frames from ``start`` to ``end`` (same atoms, same order, same cell), evenly
    spaced from -overshoot to 1 + overshoot (``path_fraction`` in info), each thermally
    displaced by ``stdev`` (A, hydrogen; see ``rattled``).

    Molecules (``molecules_of(start)``) move as rigid bodies: the centre of mass along a
    straight line, the orientation about one fixed axis (the rotation that best maps the
    start onto the end, Kabsch), and the small change of shape linearly. A straight line
    for every atom would shrink the bonds of a turning molecule (N-H to 0.93 A midway
    between two phase-I-like ammonia minima). Training data for the energy difference
    between two minima: the forces along the path integrate to it. Minimum image
    throughout, so unwrapped MD frames work.
    """
    if len(start) != len(end) or (start.numbers != end.numbers).any():
        raise ValueError("path end points must hold the same atoms in the same order")
    masses = start.get_masses()
    bodies = []
    for idx in molecules_of(start):
        weights = masses[idx] / masses[idx].sum()
        local0 = start.get_distances(idx[0], idx, mic=True, vector=True)  # whole across cell faces
        local1 = end.get_distances(idx[0], idx, mic=True, vector=True)
        com0 = start.positions[idx[0]] + weights @ local0
        move = find_mic(end.positions[idx[0]] + weights @ local1 - com0, start.cell, start.pbc)[0]
        body0, body1 = local0 - weights @ local0, local1 - weights @ local1
        rotation = Rotation.align_vectors(body1, body0)[0] if len(idx) > 1 else Rotation.identity()
        shape = rotation.inv().apply(body1) - body0
        bodies.append((idx, com0, move, rotation.as_rotvec(), body0, shape))
    frames = []
    for k, fraction in enumerate(np.linspace(-overshoot, 1 + overshoot, n)):
        frame = start.copy()
        for idx, com, move, rotvec, body, shape in bodies:
            frame.positions[idx] = com + fraction * move + Rotation.from_rotvec(fraction * rotvec).apply(body + fraction * shape)
        frame = rattled(frame, 1, stdev=stdev, seed=seed + k)[0] if stdev else frame
        frame.info = {"structure": "path between two structures", "path_fraction": round(float(fraction), 4)}
        frames.append(frame)
    return frames


def closest_intermolecular(atoms: ase.Atoms, molecules: list[np.ndarray]) -> float:
    """Smallest distance (A, minimum image) between atoms of different molecules."""
    owner = np.empty(len(atoms), dtype=int)
    for k, idx in enumerate(molecules):
        owner[idx] = k
    distances = atoms.get_all_distances(mic=bool(atoms.pbc.any()))
    return float(distances[owner[:, None] != owner[None, :]].min())


def rotated_molecule(atoms: ase.Atoms, angle_deg: float, rng: np.random.Generator, molecules=None) -> ase.Atoms:
    """Copy of ``atoms`` with one random polyatomic molecule turned rigidly by
    ``angle_deg`` about a random axis through its centre of mass."""
    molecules = [m for m in (molecules or molecules_of(atoms)) if len(m) > 1]
    if not molecules:
        raise ValueError("no polyatomic molecule to rotate")
    idx = molecules[rng.integers(len(molecules))]
    relative = atoms.get_distances(idx[0], idx, mic=True, vector=True)  # unwrapped across the cell
    masses = atoms.get_masses()[idx]
    centre = (relative * masses[:, None]).sum(axis=0) / masses.sum()
    axis = rng.normal(size=3)
    turn = Rotation.from_rotvec(np.radians(angle_deg) * axis / np.linalg.norm(axis)).as_matrix()
    new = atoms.copy()
    new.positions[idx] = atoms.positions[idx[0]] + centre + (relative - centre) @ turn.T
    return new


def reoriented_set(
    atoms: ase.Atoms, n: int, angles=(15.0, 120.0), stdev: float = 0.03, min_contact: float = 1.4, seed: int = 0
) -> list[ase.Atoms]:
    """``n`` copies of a molecular crystal with one molecule turned by a random angle
    in ``angles`` (degrees) and thermal displacements (``stdev`` A for H, see ``rattled``).

    These sample the orientational energy landscape (librations, rotational
    barriers) that thermal rattling alone leaves empty; draws with two molecules
    closer than ``min_contact`` A are redrawn.
    """
    rng = np.random.default_rng(seed)
    molecules = molecules_of(atoms)
    frames = []
    while len(frames) < n:
        turned = rotated_molecule(atoms, rng.uniform(*angles), rng, molecules)
        turned = rattled(turned, 1, stdev=stdev, seed=int(rng.integers(2**31)))[0]
        if closest_intermolecular(turned, molecules) >= min_contact:
            turned.info["structure"] = f"{atoms.info.get('structure', 'crystal')}, one molecule turned"
            frames.append(turned)
    return frames


def turned_about_own_axes(atoms: ase.Atoms, angle_deg, molecules=None) -> ase.Atoms:
    """Copy with every molecule's hydrogens turned by ``angle_deg`` (one value, or one
    per molecule) about the axis from its heavy atom to the centroid of its hydrogens
    (the C3 axis of NH3). One angle for all molecules of a crystal with molecules on
    symmetry axes (phase I) keeps the space group: a rigid rotational energy profile."""
    new = atoms.copy()
    molecules = molecules or molecules_of(atoms)
    angles = np.broadcast_to(np.asarray(angle_deg, dtype=float), (len(molecules),))
    for idx, angle in zip(molecules, angles):
        heavy, hydrogens = idx[atoms.numbers[idx] > 1], idx[atoms.numbers[idx] == 1]
        if len(heavy) != 1 or len(hydrogens) < 2:
            raise ValueError("turning about own axes needs molecules of one heavy atom and two or more H")
        relative = atoms.get_distances(heavy[0], hydrogens, mic=True, vector=True)
        axis = relative.mean(axis=0)
        if np.linalg.norm(axis) < 1e-3:
            raise ValueError("a molecule's hydrogens are centred on its heavy atom: no axis to turn about")
        turn = Rotation.from_rotvec(np.radians(angle) * axis / np.linalg.norm(axis)).as_matrix()
        new.positions[hydrogens] = atoms.positions[heavy[0]] + relative @ turn.T
    return new


def ammonia_c3_scan(angles=(0, 10, 20, 30, 45, 60), a: float = 5.13) -> list[ase.Atoms]:
    """Phase I with all molecules turned about their C3 axes (``c3_angle_deg`` in info)."""
    crystal = ammonia_phase_i(a)
    frames = []
    for angle in angles:
        frame = turned_about_own_axes(crystal, angle)
        frame.info.update(structure=f"NH3 phase I a={a:.3f}, all molecules turned {angle} deg about C3", c3_angle_deg=angle)
        frames.append(frame)
    return frames


def ammonia_turned_set(n: int = 12, max_angle: float = 60.0, seed: int = 0) -> list[ase.Atoms]:
    """Phase-I cells (a = 5.00-5.20 A), each molecule turned about its C3 axis by its own
    random angle in [-max_angle, max_angle] degrees, thermally displaced (0.03 A for H):
    training data for the librations that ``ammonia_c3_scan`` probes rigidly."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        crystal = ammonia_phase_i(a=rng.uniform(5.0, 5.2))
        turned = turned_about_own_axes(crystal, rng.uniform(-max_angle, max_angle, size=4))
        turned = rattled(turned, 1, stdev=0.03, seed=seed + k)[0]
        turned.info["structure"] = f"{crystal.info['structure']}, molecules turned about C3"
        frames.append(turned)
    return frames


def ammonia_reoriented_set(n: int = 24, seed: int = 0) -> list[ase.Atoms]:
    """Phase-I cells (a = 5.00-5.20 A) with one molecule turned by 15-120 degrees."""
    rng = np.random.default_rng(seed)
    return [reoriented_set(ammonia_phase_i(a=rng.uniform(5.0, 5.2)), 1, seed=seed + k)[0] for k in range(n)]


def ammonia_initial_set(n_crystal: int = 80, n_liquid: int = 40, seed: int = 0) -> list[ase.Atoms]:
    """Thermally displaced phase-I cells (a = 5.00-5.20 A) and 4-molecule liquid boxes.

    Hydrogen displacements of 0.03-0.07 A (N: 0.55x) span classical 100-240 K
    motion up to the spread of PIMD beads; liquid boxes are at 0.62-0.74 g/cm3.
    """
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n_crystal):
        crystal_cell = ammonia_phase_i(a=rng.uniform(5.0, 5.2))
        frames += rattled(crystal_cell, 1, stdev=rng.choice([0.03, 0.05, 0.07]), seed=seed + k)
    for k in range(n_liquid):
        box = molecular_liquid("NH3", 4, density_g_cm3=rng.uniform(0.62, 0.74), seed=seed + 1000 + k)
        box.info = {"structure": "NH3 liquid, 4 molecules"}
        frames += rattled(box, 1, stdev=0.03, seed=seed + 2000 + k)
    order = rng.permutation(len(frames))  # interleave, so any prefix is a mixed set
    return [frames[i] for i in order]


#: what `legato structures --kind` writes (see :func:`structure_set`)
KINDS = {
    "ammonia-initial": "thermally displaced phase-I cells (2/3) and 4-molecule liquid boxes (1/3)",
    "ammonia-crystal": "the phase-I crystal, --repeat times along each axis",
    "ammonia-liquid": "one liquid box of --molecules NH3",
    "ammonia-reoriented": "phase-I cells with one molecule turned",
    "ammonia-turned": "phase-I cells, each molecule turned about C3 at random, displaced",
    "ammonia-c3-scan": "phase I with all molecules turned about C3, 0-60 deg",
    "path": "between the first two frames of --between, displaced",
    "liquid": "boxes of --molecule, displaced",
    "displaced": "the frames of --source in turn (tiled --repeat times, strained by up to --strain), displaced",
    "cluster": "clusters of --molecules --molecule in vacuum (1: an isolated molecule), displaced",
}


def structure_set(
    kind: str,
    n: int = 120,
    a: float = 5.13,
    repeat: int = 1,
    molecules: int = 4,
    density: float = 0.68,
    molecule_name: str = "NH3",
    source: Path | None = None,
    between: Path | None = None,
    stdev: float = 0.03,
    overshoot: float = 0.25,
    seed: int = 0,
    strain: float = 0.0,
    vacuum: float = 9.0,
    min_box: float = 10.0,
) -> list[ase.Atoms]:
    """The frames of one of :data:`KINDS`; ValueError (one line, naming the option) where they cannot be made."""
    if kind == "ammonia-initial":
        return ammonia_initial_set(n_crystal=2 * n // 3, n_liquid=n - 2 * n // 3, seed=seed)
    if kind == "ammonia-crystal":
        return [ammonia_phase_i(a, (repeat,) * 3)]
    if kind == "ammonia-liquid":
        return [molecular_liquid("NH3", molecules, density, seed=seed)]
    if kind == "ammonia-reoriented":
        return ammonia_reoriented_set(n, seed=seed)
    if kind == "ammonia-turned":
        return ammonia_turned_set(n, seed=seed)
    if kind == "ammonia-c3-scan":
        return ammonia_c3_scan(a=a)
    if kind == "path":
        if between is None or not Path(between).exists():
            raise ValueError("--kind path needs --between FILE, a structure file whose first two frames are the end points")
        ends = read_structures(between)[:2]
        if len(ends) < 2:
            raise ValueError(f"{between}: --kind path needs two frames, found {len(ends)}")
        try:
            return path_between(ends[0], ends[1], n, stdev=stdev, overshoot=overshoot, seed=seed)
        except ValueError as exc:
            raise ValueError(f"{between}: {exc}") from None
    if kind == "liquid":
        try:
            return liquid_set(molecule_name, n, molecules, density, stdev=stdev, seed=seed)
        except RuntimeError as exc:
            raise ValueError(str(exc)) from None
    if kind == "displaced":
        if source is None or not Path(source).exists():
            raise ValueError("--kind displaced needs --source FILE, a structure file (CIF, extxyz, i-PI xyz, ...)")
        return displaced_set(read_structures(source), n, stdev=stdev, seed=seed, repeat=repeat, strain=strain)
    if kind == "cluster":
        try:
            return cluster_set(molecule_name, n, molecules, vacuum=vacuum, stdev=stdev, seed=seed, min_box=min_box)
        except RuntimeError as exc:
            raise ValueError(str(exc)) from None
    raise ValueError(f"unknown kind '{kind}' (use {', '.join(KINDS)})")
