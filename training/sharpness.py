"""Sharpness: the largest loss increase within a rho-ball around trained weights.

    S(rho) = max_{|e| <= rho} L(w + e) - L(w)

estimated by projected gradient ascent from several random starts (as in the
SAM literature, e.g. Foret et al. 2021; Keskar et al. 2017 for the idea).
"""

from __future__ import annotations

import torch


def sharpness(loss_fn, params: list[torch.nn.Parameter], rho: float, restarts: int = 3, steps: int = 10, seed: int = 0) -> float:
    """Max of ``loss_fn() - L(w)`` over perturbations of norm <= rho (weights restored after)."""
    gen = torch.Generator().manual_seed(seed)
    # losses are evaluated with autograd on: force models differentiate inside the loss
    base = float(loss_fn().detach())
    origin = [p.detach().clone() for p in params]
    best = 0.0
    for _ in range(restarts):
        e = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
        _scale_to(e, rho)
        for _ in range(steps):
            with torch.no_grad():
                for p, o, d in zip(params, origin, e):
                    p.copy_(o + d)
            for p in params:
                p.grad = None
            loss = loss_fn()
            best = max(best, float(loss.detach()) - base)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            with torch.no_grad():
                step = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params)]
                _scale_to(step, rho)
                e = [d + s for d, s in zip(e, step)]
                _scale_to(e, rho)  # project onto the sphere |e| = rho (the max of an ascent lies on it)
        with torch.no_grad():
            for p, o, d in zip(params, origin, e):
                p.copy_(o + d)
        best = max(best, float(loss_fn().detach()) - base)
    with torch.no_grad():
        for p, o in zip(params, origin):
            p.copy_(o)
    return best


def _scale_to(tensors: list[torch.Tensor], norm: float) -> None:
    total = torch.sqrt(sum((t.double() ** 2).sum() for t in tensors))
    for t in tensors:
        t.mul_(norm / (total + 1e-30))


def model_loss(model, batch, coeffs: dict):
    """The training loss (weighted MSEs of per-atom energy, forces, Wannier vectors) as a closure."""
    from nequip.data import AtomicDataDict

    from .fields import WANNIER_DISP

    n_atoms = torch.bincount(batch[AtomicDataDict.BATCH_KEY]).to(torch.float64)
    target = {k: v.detach() for k, v in batch.items() if isinstance(v, torch.Tensor)}
    total = sum(coeffs.values())

    def loss():
        out = model(dict(batch))
        e = ((out[AtomicDataDict.TOTAL_ENERGY_KEY].reshape(-1) - target[AtomicDataDict.TOTAL_ENERGY_KEY].reshape(-1)) / n_atoms) ** 2
        f = (out[AtomicDataDict.FORCE_KEY] - target[AtomicDataDict.FORCE_KEY]) ** 2
        w = (out[WANNIER_DISP] - target[WANNIER_DISP]) ** 2
        return (coeffs["per_atom_energy"] * e.mean() + coeffs["forces"] * f.mean() + coeffs["wannier_disp"] * w.mean()) / total

    return loss
