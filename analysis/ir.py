"""IR absorption from dipole time series (classical MD or TRPMD).

    I(nu) = omega (1 - exp(-beta hbar omega)) Q(omega) S_MM(nu)

with S_MM the spectrum of the dipole ACF (:func:`legato.analysis.correlation.spectrum`,
e^2 A^2 cm) and Q a quantum correction factor. The default ``harmonic``,
Q = beta hbar omega / (1 - exp(-beta hbar omega)), gives I ~ omega^2 S_MM: for a
classical ACF it is the harmonic-correction estimate, for TRPMD's Kubo-transformed
ACF it is exact. ``standard`` uses Q = exp(beta hbar omega / 2); ``none`` Q = 1.
Output ``intensity`` is in e^2 A^2 cm^-1 (omega in cm^-1, scaled by beta hbar where
needed); ``intensity_norm`` scales the largest value to 1.

For PIMD the dipole is the bead average (the TRPMD estimator of the Kubo-transformed
correlation function of a linear operator).
"""

from __future__ import annotations

import numpy as np

from legato.units import INVCM_IN_MEV, KB_EV_PER_K

from .correlation import autocorrelation, default_max_lag, spectrum

CORRECTIONS = ("harmonic", "standard", "none")


def beta_hbar_omega(nu_cm: np.ndarray, temperature: float) -> np.ndarray:
    return nu_cm * INVCM_IN_MEV * 1e-3 / (KB_EV_PER_K * temperature)


def quantum_correction(nu_cm: np.ndarray, temperature: float, kind: str) -> np.ndarray:
    x = beta_hbar_omega(nu_cm, temperature)
    if kind == "harmonic":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(x > 1e-12, x / -np.expm1(-np.maximum(x, 1e-300)), 1.0)
    if kind == "standard":
        return np.exp(x / 2)
    if kind == "none":
        return np.ones_like(x)
    raise ValueError(f"unknown quantum correction '{kind}' (use one of {CORRECTIONS})")


def ir_spectrum(dipoles: np.ndarray, dt_fs: float, temperature: float, correction: str = "harmonic", window: str | None = "hann", max_lag: int | None = None, pad: int = 4) -> dict:
    """IR spectrum from dipoles (T, 3) or per-bead dipoles (T, P, 3), e*A, sampled every ``dt_fs``.

    Returns ``{"wavenumber": cm^-1, "intensity": ..., "intensity_norm": ..., "acf": ...}``.
    """
    dipoles = np.asarray(dipoles, float)
    if dipoles.ndim == 3:
        dipoles = dipoles.mean(axis=1)  # bead average
    if dipoles.ndim != 2 or dipoles.shape[1] != 3:
        raise ValueError(f"dipoles must have shape (T, 3) or (T, P, 3), got {dipoles.shape}")
    if len(dipoles) < 16:
        raise ValueError(f"only {len(dipoles)} dipole frames: too short for a spectrum")
    fluctuation = dipoles - dipoles.mean(axis=0)
    acf = autocorrelation(fluctuation[:, None, :]) * 3  # <dM(0) . dM(t)>
    nu, s = spectrum(acf, dt_fs, window=window, max_lag=max_lag or default_max_lag(len(acf)), pad=pad)
    x = beta_hbar_omega(nu, temperature)
    intensity = nu * -np.expm1(-x) * quantum_correction(nu, temperature, correction) * s
    peak = intensity.max()
    return {"wavenumber": nu, "intensity": intensity, "intensity_norm": intensity / peak if peak > 0 else intensity, "acf": acf}
