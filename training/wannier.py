"""Gamma-point maximally localized Wannier centres from the Berry-phase position operator.

For a cell with lattice vectors A_a (rows) and reciprocal vectors G_a
(G_a . A_b = 2 pi delta_ab), the matrices Z_a[i, j] = <i| exp(-i G_a . r) |j>
of the occupied orbitals are jointly "diagonalized" by a real rotation that
maximizes the Resta/Silvestrelli functional sum_a w_a sum_i |Z_a,ii|^2 (what
CP2K's Jacobi localizer does). The centres are then

    r_i = -(1 / 2 pi) sum_a arg(Z_a,ii) A_a.

Both the functional and the centres carry an O(|G|^2) = O(1/L^2) error against
the molecular (Foster-Boys) limit. Order 2, the default, also uses Z at 2 G_a and
cancels that term by Richardson extrapolation (weights and formula in
:func:`spread_weights` and :func:`centres_from_z`), which brings NH3 in a 10 A box
from 0.009 A to 0.001 A of the Boys centres (tests/test_wannier_dft.py).

The Z matrices come from PySCF's lattice-summed Fourier-transformed AO pairs
(``pyscf.pbc.df.ft_ao.ft_aopair``); the rotation is real Jacobi joint
diagonalization (Cardoso & Souloumiac, SIAM J. Matrix Anal. Appl. 17, 161 (1996))
of the real and imaginary parts. PySCF ships Boys/Pipek-Mezey/Edmiston localizers
for molecules and a Wannier90 bridge, but no Gamma-point Berry-phase localizer,
hence this module.
"""

from __future__ import annotations

import numpy as np

from legato.geometry import mic_vectors


def berry_phase_matrices(cell, orbitals: np.ndarray, order: int = 2) -> np.ndarray:
    """Z = C^T M C for G_a (order 1) and also 2 G_a (order 2): shape (3 * order, n_orb, n_orb)."""
    from pyscf.pbc.df.ft_ao import ft_aopair

    lattice = cell.lattice_vectors()  # bohr, rows
    reciprocal = 2 * np.pi * np.linalg.inv(lattice).T
    gs = np.concatenate([m * reciprocal for m in range(1, order + 1)])
    ao_pairs = ft_aopair(cell, gs)  # (3 * order, nao, nao): int exp(-iG.r) mu(r) nu(r)
    return np.einsum("mi,gmn,nj->gij", orbitals, ao_pairs, orbitals)


def spread_weights(lattice: np.ndarray, order: int = 2) -> np.ndarray:
    """Weights of sum_k w_k sum_i |Z_k,ii|^2, one per matrix of :func:`berry_phase_matrices`.

    Order 1: w_a = |A_a|^2 / (2 pi)^2 (Resta/Silvestrelli; the spread to O(G^2)).
    Order 2: Richardson extrapolation of G and 2G, (4/3) w_a and -(1/12) w_a, which
    cancels the G^2 term, so the functional is the Boys spread to O(G^4).
    """
    cos = lattice @ lattice.T / np.outer(np.linalg.norm(lattice, axis=1), np.linalg.norm(lattice, axis=1))
    if np.abs(cos - np.eye(3)).max() > 1e-8:
        raise ValueError("Berry-phase Wannier centres need an orthorhombic cell (use an orthorhombic supercell)")
    w = (np.linalg.norm(lattice, axis=1) / (2 * np.pi)) ** 2
    if order == 1:
        return w
    if order == 2:
        return np.concatenate([4 / 3 * w, -1 / 12 * w])
    raise ValueError(f"Berry-phase order must be 1 or 2, not {order}")


def spread_functional(z: np.ndarray, weights: np.ndarray) -> float:
    """Omega = sum_a w_a sum_i |Z_a,ii|^2 (larger = more localized)."""
    return float(np.sum(weights[:, None] * np.abs(np.einsum("gii->gi", z)) ** 2))


def localize(z: np.ndarray, weights: np.ndarray, n_random: int = 4, seed: int = 0):
    """Best of Jacobi runs from the given orbitals and ``n_random`` random rotations.

    Jacobi sweeps can stop at a saddle point of the functional (symmetric
    molecules started from canonical orbitals do), so several starts are
    compared by their spread functional. Returns ``(U, rotated Z)``.
    """
    n = z.shape[-1]
    rng = np.random.default_rng(seed)
    starts = [np.eye(n)] + [np.linalg.qr(rng.normal(size=(n, n)))[0] for _ in range(n_random)]
    best = None
    for start in starts:
        u, z_loc, _ = jacobi_localize(z, weights, start=start)
        score = spread_functional(z_loc, weights)
        if best is None or score > best[0] + 1e-12:
            best = (score, u, z_loc)
    return best[1], best[2]


def jacobi_localize(z: np.ndarray, weights: np.ndarray, tol: float = 1e-10, max_sweeps: int = 200, start: np.ndarray | None = None):
    """Real rotation U maximizing sum_a w_a sum_i |(U^T Z_a U)_ii|^2, from ``start`` (identity).

    Returns ``(U, rotated Z, sweeps)``. Raises RuntimeError if not converged.
    """
    n = z.shape[-1]
    u = np.eye(n) if start is None else start.copy()
    z0 = np.einsum("ip,gij,jq->gpq", u, z, u)
    mats = np.concatenate([z0.real, z0.imag])
    mats = 0.5 * (mats + mats.transpose(0, 2, 1))
    w = np.concatenate([weights, weights])  # may be negative (order 2): no square roots
    for sweep in range(1, max_sweeps + 1):
        largest = 0.0
        for p in range(n - 1):
            for q in range(p + 1, n):
                g = np.stack([mats[:, p, p] - mats[:, q, q], 2 * mats[:, p, q]])
                evals, evecs = np.linalg.eigh((g * w) @ g.T)
                x, y = evecs[:, 1]
                if x < 0:
                    x, y = -x, -y
                c = np.sqrt(0.5 * (1 + x))
                s = y / (2 * c)
                if abs(s) < tol:
                    continue
                largest = max(largest, abs(s))
                rot = np.array([[c, -s], [s, c]])
                idx = [p, q]
                mats[:, :, idx] = mats[:, :, idx] @ rot
                mats[:, idx, :] = rot.T @ mats[:, idx, :]
                u[:, idx] = u[:, idx] @ rot
        if largest < tol:
            return u, np.einsum("ip,gij,jq->gpq", u, z, u), sweep
    raise RuntimeError(f"Wannier localization did not converge in {max_sweeps} sweeps")


def centres_from_z(z: np.ndarray, lattice: np.ndarray) -> np.ndarray:
    """Centres (same length unit as ``lattice``) from the diagonals of Z.

    Order 1: s_a = -arg(Z_a,ii) / 2 pi, off the centroid by -G^2 kappa_3 / 6
    (third cumulant of the orbital density). Order 2 (Z also at 2 G_a):
    (4 s(G) - s(2G)) / 3 with s(2G) on the branch nearest s(G), exact to O(G^4).
    """
    diag = np.einsum("gii->gi", z)
    frac = -np.angle(diag[:3]) / (2 * np.pi)  # (3, n)
    if len(diag) == 6:
        step = -np.angle(diag[3:] * np.conj(diag[:3]) ** 2) / (4 * np.pi)  # s(2G) - s(G), nearest branch
        frac = frac - step / 3
    return frac.T @ lattice


def wannier_centres(cell, orbitals: np.ndarray, order: int = 2) -> np.ndarray:
    """Centres (n_orb, 3) in bohr of the orbitals (columns of ``orbitals``); ``order`` see :func:`spread_weights`."""
    lattice = cell.lattice_vectors()
    z = berry_phase_matrices(cell, orbitals, order)
    _, z_loc = localize(z, spread_weights(lattice, order))
    return centres_from_z(z_loc, lattice)


def assign_centres(positions, centres, cell, owners) -> tuple[np.ndarray, np.ndarray]:
    """Give each centre to the nearest owning atom (minimum image).

    ``owners`` is a boolean mask of atoms that may own centres (e.g. non-H).
    Returns ``(wannier_disp, wannier_count)``: per-atom displacement of the centroid
    of the owned centres from the atom (zeros where none), and the count.
    All lengths in the unit of ``positions``.
    """
    positions = np.asarray(positions)
    owner_idx = np.flatnonzero(owners)
    if owner_idx.size == 0:
        raise ValueError("no atom may own Wannier centres (check wannier_owners)")
    delta = centres[:, None, :] - positions[None, owner_idx, :]  # (n_c, n_own, 3)
    if cell is not None:
        delta = mic_vectors(delta, cell)
    nearest = np.argmin(np.linalg.norm(delta, axis=-1), axis=1)
    disp = np.zeros_like(positions)
    count = np.zeros(len(positions), dtype=int)
    for c, k in enumerate(nearest):
        atom = owner_idx[k]
        disp[atom] += delta[c, k]
        count[atom] += 1
    has = count > 0
    disp[has] /= count[has, None]
    return disp, count
