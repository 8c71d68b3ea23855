"""Shared geometry: distances under the minimum image, bonds and molecules, the atom
order legato writes, and the reference crystal (ammonia phase I).

Minimum images come from :func:`ase.geometry.find_mic` (any cell) and bonds from ASE's
neighbour list with its natural (covalent) cutoffs.

Ammonia phase I (cubic P2_13, No. 198, Z = 4) uses the neutron structure of
solid ND3 (Hewat & Riekel, Acta Cryst. A35, 569 (1979)): N on 4a (x, x, x),
D on 12b; the lattice constant is a parameter (5.13 A near melting).
"""

from __future__ import annotations

import ase
import numpy as np
from ase.geometry import find_mic
from ase.geometry.geometry import naive_find_mic
from ase.neighborlist import NeighborList, natural_cutoffs

AMMONIA_PHASE_I = {
    "spacegroup": 198,
    "symbols": ["N", "H"],
    "basis": [(0.2107, 0.2107, 0.2107), (0.3689, 0.2671, 0.1159)],
}


def min_distance(positions, cell=None, pbc=True, others=None) -> float:
    """Smallest distance (A) between two atoms of ``positions`` (N, 3), or with ``others``
    (M, 3) between an atom of each, minimum image along the periodic directions of ``cell``
    (none without a cell); inf where there is no pair."""
    positions = np.asarray(positions, dtype=float).reshape(-1, 3)
    if others is None:
        i, j = np.triu_indices(len(positions), 1)
        vectors = positions[j] - positions[i]
    else:
        vectors = (np.asarray(others, dtype=float).reshape(1, -1, 3) - positions[:, None, :]).reshape(-1, 3)
    if len(vectors) == 0:
        return float("inf")
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), 3) if cell is not None else np.zeros(3, dtype=bool)
    if not pbc.any():
        return float(np.linalg.norm(vectors, axis=1).min())
    if pbc.all():
        # ASE's fast minimum image (fractional rounding) is exact for the shortest pair once that is
        # shorter than half the cell's narrowest width; else ASE's general search (~20x slower)
        shortest = naive_find_mic(vectors, cell)[1].min()
        if shortest < 0.5 / np.linalg.norm(np.linalg.inv(cell), axis=0).max():
            return float(shortest)
    return float(find_mic(vectors, cell, pbc)[1].min())


def closest_approach(atoms: ase.Atoms) -> float:
    """Smallest interatomic distance (A) of ``atoms``, minimum image when periodic; inf below two atoms."""
    return min_distance(atoms.positions, atoms.cell.array, atoms.pbc)


def mic_vectors(vectors, cell, pbc=True) -> np.ndarray:
    """The shortest periodic images of difference vectors (..., 3) under ``cell`` (A)."""
    vectors = np.asarray(vectors, dtype=float)
    return find_mic(vectors.reshape(-1, 3), cell, pbc)[0].reshape(vectors.shape)


def covalent_neighbours(atoms: ase.Atoms) -> NeighborList:
    """Covalent bonds as an updated ASE neighbour list (natural cutoffs, minimum image)."""
    neighbours = NeighborList(natural_cutoffs(atoms), self_interaction=False, bothways=True)
    neighbours.update(atoms)
    return neighbours


def molecules_of(atoms: ase.Atoms) -> list[np.ndarray]:
    """Atom indices of each covalently bonded molecule (ASE natural cutoffs, minimum image)."""
    from scipy.sparse.csgraph import connected_components

    neighbours = covalent_neighbours(atoms)
    n, label = connected_components(neighbours.get_connectivity_matrix(sparse=True), directed=False)
    return [np.flatnonzero(label == k) for k in range(n)]


#: covalent cutoffs x this make bonds: PIMD beads stretch N-H to 1.12 A and more, past the
#: plain sum of covalent radii (1.02 A), while hydrogen bonds (~2.3 A) stay out
WHOLE_MOLECULE_BOND_FACTOR = 1.3


def _bond_forest(numbers, positions, cell, pbc):
    """Covalent bonds (natural cutoffs x :data:`WHOLE_MOLECULE_BOND_FACTOR`, ASE's neighbour
    list, minimum image) as a breadth-first forest from each molecule's first atom.

    Returns ``edges``, (parent, child, depth) in breadth-first order (a parent before its
    children), the bond ``vectors`` (A) by (i, j), and the per-atom ``cutoffs`` (A).
    """
    from ase.neighborlist import neighbor_list
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import breadth_first_order, connected_components

    atoms = ase.Atoms(numbers=numbers, positions=positions, cell=cell, pbc=pbc)
    cutoffs = np.asarray(natural_cutoffs(atoms, mult=WHOLE_MOLECULE_BOND_FACTOR))
    first, second, vectors = neighbor_list("ijD", atoms, cutoffs)
    n = len(atoms)
    graph = coo_matrix((np.ones(len(first)), (first, second)), shape=(n, n)).tocsr()
    _, label = connected_components(graph, directed=False)
    edges = []
    for root in np.unique(label, return_index=True)[1]:
        order, parent = breadth_first_order(graph, root, directed=False, return_predecessors=True)
        depth = {int(root): 0}
        for atom in order[1:]:
            depth[int(atom)] = depth[int(parent[atom])] + 1
            edges.append((int(parent[atom]), int(atom), depth[int(atom)]))
    bonds = {(i, j): d for i, j, d in zip(first.tolist(), second.tolist(), vectors)}
    return edges, bonds, cutoffs


def whole_molecules(numbers, positions, cell, pbc=True) -> np.ndarray:
    """``positions`` (N, 3) A with every covalently bonded molecule made whole.

    Each atom moves by lattice vectors to the minimum image of the bonded atom it is
    reached from (breadth first from each molecule's first atom), whatever side of the
    cell the input put it on. A neutral molecule translated by a lattice vector keeps
    its dipole, so the cell dipole of whole molecules is continuous in time however
    the positions were wrapped (i-PI's ``pbc='true'`` wraps them).
    """
    positions = np.asarray(positions, dtype=float)
    edges, bonds, _ = _bond_forest(numbers, positions, cell, pbc)
    whole = positions.copy()
    for parent, child, _ in edges:
        whole[child] = whole[parent] + bonds[(parent, child)]
    return whole


class WholeMolecules:
    """:func:`whole_molecules` for many frames of the same atoms, at numpy speed.

    The bond tree (breadth first from each molecule's first atom) is found once, with
    ASE's neighbour list as in :func:`whole_molecules`, and reused: each frame then only
    needs the minimum image of its tree bonds (fractional rounding). Where a tree bond of a
    frame is no bond any more (longer than its cutoff: a proton moved to another molecule,
    atoms reordered), that frame goes through :func:`whole_molecules` and its tree replaces
    the cached one. Bonds that form without one breaking leave the tree as it is: the
    molecules stay whole, as the tree defines them.

    Why not ASE's neighbour list per frame: for a 16-atom cell it took ~70% of the driver's
    time (a profile of `legato run --contract 4 --mts 4` on the shipped models).
    """

    def __init__(self):
        self._key = None

    def _build(self, numbers, positions, cell, pbc) -> None:
        edges, _, cutoffs = _bond_forest(numbers, positions, cell, pbc)
        depths = max((depth for _, _, depth in edges), default=0)
        # (parents, children) per breadth-first depth: a depth's images follow from the one above
        self._levels = [tuple(np.array([e[k] for e in edges if e[2] == d], dtype=int) for k in (0, 1)) for d in range(1, depths + 1)]
        self._parents = np.concatenate([p for p, _ in self._levels]) if edges else np.zeros(0, int)
        self._children = np.concatenate([c for _, c in self._levels]) if edges else np.zeros(0, int)
        self._cutoff = cutoffs[self._parents] + cutoffs[self._children]

    def __call__(self, numbers, positions, cells, pbc=True) -> np.ndarray:
        """``positions`` (B, N, 3) A under ``cells`` (B, 3, 3) with every molecule made whole."""
        positions = np.asarray(positions, dtype=float)
        cells = np.asarray(cells, dtype=float).reshape(len(positions), 3, 3)
        periodic = np.broadcast_to(np.asarray(pbc, dtype=bool), 3)
        key = (tuple(int(z) for z in numbers), tuple(bool(p) for p in periodic))
        if self._key != key:
            self._build(numbers, positions[0], cells[0], periodic)
            self._key = key
        whole = positions.copy()
        lattice = cells[:, periodic]  # (B, k, 3): the periodic vectors only (a slab's third may be zero)
        reciprocal = np.linalg.pinv(lattice)  # (B, 3, k)
        # rounding the lattice coordinates gives the minimum image of every bond shorter than half
        # the narrowest spacing of lattice planes
        spacings = 1.0 / np.linalg.norm(reciprocal, axis=1)  # (B, k)
        fast = spacings.min(axis=1, initial=np.inf) > 2 * self._cutoff.max(initial=0.0)
        bonds = positions[:, self._children] - positions[:, self._parents]  # (B, E, 3)
        shifts = -np.round(bonds @ reciprocal)  # (B, E, k): lattice vectors added to each bond
        lengths = np.linalg.norm(bonds + shifts @ lattice, axis=-1)
        ok = fast & np.all(lengths <= self._cutoff, axis=1)
        image = np.zeros(shifts.shape[:1] + positions.shape[1:2] + shifts.shape[2:])  # (B, N, k): lattice shift of each atom
        start = 0
        for parents, children in self._levels:
            image[:, children] = image[:, parents] + shifts[:, start : start + len(children)]
            start += len(children)
        whole[ok] += (image @ lattice)[ok]
        for b in np.flatnonzero(~ok):
            whole[b] = whole_molecules(numbers, positions[b], cells[b], periodic)
            if fast[b]:  # a bond broke: this frame's tree from now on
                self._build(numbers, positions[b], cells[b], periodic)
        return whole


def order_by_species(atoms: ase.Atoms) -> ase.Atoms:
    """Heavy atoms first, then hydrogens (stable order for i-PI files)."""
    order = np.argsort(-atoms.numbers, kind="stable")
    return atoms[order]


def ammonia_phase_i(a: float = 5.13, repeat=(1, 1, 1)) -> ase.Atoms:
    """Phase-I ammonia crystal (16 atoms per cell), lattice constant ``a`` in A."""
    from ase.spacegroup import crystal

    atoms = crystal(
        AMMONIA_PHASE_I["symbols"],
        basis=AMMONIA_PHASE_I["basis"],
        spacegroup=AMMONIA_PHASE_I["spacegroup"],
        cellpar=[a, a, a, 90, 90, 90],
    )
    atoms = order_by_species(atoms.repeat(repeat))
    atoms.info = {"structure": f"NH3 phase I a={a:.3f}"}
    return atoms
