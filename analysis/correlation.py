"""Time correlation functions and their spectra (Wiener-Khinchin, FFT).

``autocorrelation`` averages over time origins (unbiased: lag k is divided by
T - k) and over every non-time axis (atoms, components, beads). ``spectrum``
returns the one-sided cosine transform on a wavenumber grid (cm^-1), normalised
so that the sum rule holds: integral over nu >= 0 of S(nu) d(nu) = C(0).
"""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft
from scipy.signal import get_window

from legato.units import C_CM_PER_S, FS_IN_SECONDS

#: c in cm/fs
C_CM_PER_FS = C_CM_PER_S * FS_IN_SECONDS


def autocorrelation(x: np.ndarray, weights: np.ndarray | None = None, mean_axes: bool = True) -> np.ndarray:
    """C(k) = < x(t) . x(t + k) >_t for x of shape (T, ...).

    ``weights`` (broadcast over the non-time axes, e.g. per atom) weight each
    series; with ``mean_axes`` the weighted series are summed then divided by
    the number of series (so weights of 1 give the plain average).
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    flat = x.reshape(n, -1)
    w = None
    if weights is not None:
        w = np.broadcast_to(np.asarray(weights, float), x.shape[1:]).reshape(-1)
    size = sfft.next_fast_len(2 * n)
    spectrum = sfft.rfft(flat, n=size, axis=0)
    power = (spectrum * spectrum.conj()).real
    if w is not None:
        power = power * w
    summed = power.sum(axis=1) if mean_axes else power
    acf = sfft.irfft(summed, n=size, axis=0)[:n]
    acf /= (n - np.arange(n)).reshape((-1,) + (1,) * (acf.ndim - 1))
    if mean_axes:
        acf /= flat.shape[1]
    return acf


def spectrum(acf: np.ndarray, dt_fs: float, window: str | None = "hann", max_lag: int | None = None, pad: int = 4):
    """One-sided spectrum S(nu) of an ACF sampled every ``dt_fs`` fs; nu in cm^-1.

    S(nu) = 4 c int_0^T C(t) w(t) cos(2 pi c nu t) dt, so that int S d(nu) = C(0).
    ``window`` is a scipy window name applied as its right half (w(0) = 1),
    ``max_lag`` truncates the ACF (default: half the trajectory), ``pad`` the
    zero-padding factor. Returns ``(nu, S)``.
    """
    acf = np.asarray(acf, float)
    n = len(acf) if max_lag is None else min(max_lag, len(acf))
    c = acf[:n].copy()
    if window:
        c *= get_window(window, 2 * n, fftbins=False)[n:] / get_window(window, 2 * n, fftbins=False)[n]
    size = sfft.next_fast_len(pad * 2 * n)
    c_full = np.zeros(size)
    c_full[:n] = c
    transform = sfft.rfft(c_full).real - 0.5 * c[0]  # trapezoid rule at t = 0
    nu = np.arange(len(transform)) / (size * dt_fs * C_CM_PER_FS)
    return nu, 4 * C_CM_PER_FS * dt_fs * transform


def default_max_lag(n_frames: int) -> int:
    return max(n_frames // 2, 2)
