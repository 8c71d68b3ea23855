"""Incoherent INS spectra (VISION-like) from velocities, in the incoherent approximation.

Per species s (weights: incoherent cross sections sigma_s, V. F. Sears, Neutron News
3, 26 (1992)), the mass-normalised partial density of states g_s(E) (integral 1)
is the spectrum of the velocity ACF divided by C(0). Then, as in Mantid's Abins
and OCLIMAX for a powder in the isotropic incoherent approximation,

    S1_s(Q, E) = N_s sigma_s / 4pi * exp(-Q^2 u_s^2) * (hbar^2 Q^2 / 2 m_s) * A_s(E)
    A_s(E)     = g_s(E) / E * (n(E) + 1)
    S2_s(Q, E) = N_s sigma_s / 4pi * exp(-Q^2 u_s^2) * (hbar^2 Q^2 / 2 m_s)^2 / 2 * (A_s * A_s)(E)

with u_s^2 the simulated mean-square displacement per direction (Debye-Waller)
and * a convolution (two-phonon term). Orders above two are left out; Abins goes
to order ten. The instrument enters through the kinematic lines Q(E) of an indirect-geometry
spectrometer (final energy E_f, analysers at 45 and 135 degrees) and a Gaussian
resolution with FWHM proportional to E (VISION: ~1.2%).
Energies in meV, Q in 1/A.
"""

from __future__ import annotations

import numpy as np
from ase.data import atomic_masses, atomic_numbers

from legato.units import HBAR2_2AMU_MEV_A2, INVCM_IN_MEV, KB_EV_PER_K, NEUTRON_E_K2, deuterium_mass_amu

from .correlation import autocorrelation, default_max_lag, spectrum

#: bound incoherent cross sections, barn (Sears 1992)
SIGMA_INC = {"H": 80.27, "D": 2.05, "C": 0.001, "N": 0.50, "O": 0.0008, "F": 0.0008, "S": 0.007, "Li": 0.92, "Na": 1.62, "Cl": 5.3}


def atomic_mass(symbol: str) -> float:
    """amu: ASE's standard masses, and deuterium's (D)."""
    return deuterium_mass_amu() if symbol == "D" else float(atomic_masses[atomic_numbers[symbol]])


def kinematic_q(energy_mev: np.ndarray, final_energy_mev: float = 3.5, angle_deg: float = 45.0) -> np.ndarray:
    """|Q| (1/A) along an indirect-geometry analyser line: E_f fixed, scattering angle fixed."""
    k_f = np.sqrt(final_energy_mev / NEUTRON_E_K2)
    k_i = np.sqrt((np.asarray(energy_mev) + final_energy_mev) / NEUTRON_E_K2)
    return np.sqrt(k_i**2 + k_f**2 - 2 * k_i * k_f * np.cos(np.radians(angle_deg)))


def partial_dos(velocities: np.ndarray, symbols, dt_fs: float, max_lag: int | None = None, window: str | None = "hann", pad: int = 4) -> dict:
    """{species: (E meV, g(E) per meV, integral 1)} from velocities (T, N, 3) or (T, P, N, 3)."""
    v = np.asarray(velocities, float)
    if v.ndim == 4:  # beads: average the per-bead ACFs
        v = np.moveaxis(v, 1, 2)  # (T, N, P, 3)
    symbols = np.asarray(symbols)
    out = {}
    for s in dict.fromkeys(symbols):
        acf = autocorrelation(v[:, symbols == s])
        nu, spec = spectrum(acf, dt_fs, window=window, max_lag=max_lag or default_max_lag(len(acf)), pad=pad)
        energy = nu * INVCM_IN_MEV
        out[str(s)] = (energy, spec / acf[0] / INVCM_IN_MEV)
    return out


#: cm^-1; below it an ordered crystal (of a few unit cells) has almost no vibrational DOS
LOW_FREQUENCY_CM = 60.0


def low_frequency_share(dos: dict, below_cm: float = LOW_FREQUENCY_CM) -> dict:
    """{species: share of its DOS below ``below_cm`` cm^-1} from :func:`partial_dos`.

    An ordered crystal has almost none there (its lowest optical modes of a small cell
    lie higher); a large share is diffusion (g(0) = m D / kT), rotational hopping or
    a soft, unstable mode: read the low-energy INS with care then.
    """
    out = {}
    for s, (energy, g) in dos.items():
        below = energy < below_cm * INVCM_IN_MEV
        out[s] = float(np.trapezoid(g[below], energy[below]) / np.trapezoid(g, energy))
    return out


def mean_square_displacement(positions: np.ndarray, symbols) -> dict:
    """u^2 per direction (A^2) per species: positions (T, N, 3) or (T, P, N, 3) about each atom's mean."""
    x = np.asarray(positions, float)
    if x.ndim == 3:
        x = x[:, None]
    mean = x.mean(axis=(0, 1), keepdims=True)
    u2 = ((x - mean) ** 2).mean(axis=(0, 1, 3))  # per atom, per direction
    symbols = np.asarray(symbols)
    return {str(s): float(u2[symbols == s].mean()) for s in dict.fromkeys(symbols)}


def _bose_plus_one(energy, temperature):
    x = energy * 1e-3 / (KB_EV_PER_K * temperature)
    with np.errstate(divide="ignore", over="ignore"):
        return np.where(x > 1e-9, 1.0 / -np.expm1(-np.maximum(x, 1e-300)), 0.0)


def resolution_broaden(energy: np.ndarray, values: np.ndarray, relative_fwhm: float = 0.012, min_fwhm_mev: float = 0.1) -> np.ndarray:
    """Gaussian broadening with FWHM = max(relative_fwhm * E, min_fwhm_mev), area preserving."""
    fwhm = np.maximum(relative_fwhm * energy, min_fwhm_mev)
    sigma = fwhm / 2.3548200450309493
    de = np.gradient(energy)
    kernel = np.exp(-0.5 * ((energy[:, None] - energy[None, :]) / sigma[None, :]) ** 2) / (np.sqrt(2 * np.pi) * sigma[None, :])
    return kernel @ (values * de)


def ins_spectrum(
    velocities,
    positions,
    symbols,
    dt_fs: float,
    temperature: float,
    final_energy_mev: float = 3.5,
    angles_deg=(45.0, 135.0),
    relative_resolution: float = 0.012,
    max_energy_mev: float = 500.0,
    min_energy_mev: float = 2.0,
    two_phonon: bool = True,
    max_lag: int | None = None,
    low_frequency_cm: float = LOW_FREQUENCY_CM,
) -> dict:
    """VISION-like S(E) (arbitrary units, both analyser banks summed) with its parts.

    The centre-of-mass velocity is removed first (a periodic cell's rigid drift is
    no phonon), and energies below ``min_energy_mev`` (VISION's lower limit, ~2 meV)
    are zeroed, where g(E)/E of a finite cell is noise.
    Returns energy (meV), wavenumber (cm^-1), ``total`` (broadened), ``one_phonon``,
    ``two_phonon``, ``h_weighted_dos``, per-species ``u2`` (A^2), the Q lines and
    ``low_frequency_share``, each species' DOS share below ``low_frequency_cm`` cm^-1.
    """
    symbols = list(symbols)
    unknown = sorted(set(symbols) - set(SIGMA_INC))
    if unknown:
        raise ValueError(f"no incoherent cross section for {unknown}; add it to legato.analysis.ins.SIGMA_INC")
    masses = np.array([atomic_mass(s) for s in symbols])
    velocities = np.asarray(velocities, float)
    com = np.einsum("n,...nk->...k", masses, velocities) / masses.sum()
    velocities = velocities - com[..., None, :]
    dos = partial_dos(velocities, symbols, dt_fs, max_lag=max_lag)
    u2 = mean_square_displacement(positions, symbols)
    energy_all = next(iter(dos.values()))[0]
    keep = (energy_all > 0) & (energy_all <= max_energy_mev)
    energy = energy_all[keep]
    de = energy[1] - energy[0]
    s1 = np.zeros_like(energy)
    s2 = np.zeros_like(energy)
    weighted_dos = np.zeros_like(energy)
    q_lines = {angle: kinematic_q(energy, final_energy_mev, angle) for angle in angles_deg}
    for s, (_, g) in dos.items():
        n_s = symbols.count(s)
        mass = atomic_mass(s)
        g = g[keep]
        weighted_dos += n_s * SIGMA_INC[s] * g
        a = np.where(energy >= min_energy_mev, g / energy * _bose_plus_one(energy, temperature), 0.0)
        a2 = np.convolve(a, a)[: len(energy)] * de
        # a2 lives on the grid E_k = (k + 2) dE (both factors start at dE): shift by one bin
        a2 = np.concatenate([[0.0], a2[:-1]])
        recoil = HBAR2_2AMU_MEV_A2 / mass
        for q in q_lines.values():
            q2 = q**2
            dw = np.exp(-q2 * u2[s])
            s1 += n_s * SIGMA_INC[s] / (4 * np.pi) * dw * recoil * q2 * a
            if two_phonon:
                s2 += n_s * SIGMA_INC[s] / (4 * np.pi) * dw * (recoil * q2) ** 2 / 2 * a2
    total = resolution_broaden(energy, s1 + s2, relative_resolution)
    return {
        "energy": energy,
        "wavenumber": energy / INVCM_IN_MEV,
        "total": total,
        "one_phonon": s1,
        "two_phonon": s2,
        "h_weighted_dos": weighted_dos / weighted_dos.sum() / de,
        "u2": u2,
        "q_lines": q_lines,
        "low_frequency_share": low_frequency_share(dos, low_frequency_cm),
    }
