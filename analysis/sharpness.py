"""Sharpness: the largest loss increase within a rho-ball around trained weights.

    S(rho) = max_{|e| <= rho} L(w + e) - L(w)

estimated by projected gradient ascent from several random starts (as in the
SAM literature, e.g. Foret et al. 2021; Keskar et al. 2017 for the idea).
A property of a trained model (what SAM training flattens), measured on labelled frames.
"""

from __future__ import annotations

import torch

from legato.fields import WANNIER_DISP

#: loss weights of :func:`sharpness_of_file` (per-atom energy, forces, Wannier vectors)
LOSS_WEIGHTS = {"per_atom_energy": 1.0, "forces": 10.0, "wannier_disp": 100.0}


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


def frames_to_batch(frames, type_names, r_max: float):
    """Labelled frames -> one nequip batch with targets (for losses outside Lightning)."""
    from nequip.data import AtomicDataDict, from_ase
    from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper, NeighborListTransform

    mapper = ChemicalSpeciesToAtomTypeMapper(model_type_names=list(type_names))
    neighbors = NeighborListTransform(r_max=r_max)
    graphs = [
        neighbors(mapper(from_ase(a, include_keys=[WANNIER_DISP], exclude_keys=["dipole", "wannier_count", "valence_charge"])))
        for a in frames
    ]
    return AtomicDataDict.batched_from_list(graphs)


def sharpness_of_file(model, data, rho: float, restarts: int = 3, steps: int = 10) -> float:
    """`legato sharpness`: :func:`sharpness` of a model file's loss (:data:`LOSS_WEIGHTS`) on the labelled frames of ``data``."""
    from legato.dataset import load_dataset
    from legato.modelfile import load_model

    net, meta = load_model(model)
    net.train()  # forces must stay differentiable w.r.t. the weights (no dropout/batch norm in Allegro)
    batch = frames_to_batch(load_dataset(data, meta["type_names"]), meta["type_names"], meta["r_max"])
    loss = model_loss(net, batch, LOSS_WEIGHTS)
    params = [p for p in net.parameters() if p.requires_grad]
    torch.manual_seed(0)
    return sharpness(loss, params, rho, restarts=restarts, steps=steps)
