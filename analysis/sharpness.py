"""Sharpness of a trained model's loss around its weights, two ways.

Worst case (what SAM minimises), estimated by projected gradient ascent from several
random starts (as in the SAM literature, e.g. Foret et al. 2021; Keskar et al. 2017):

    S(rho) = max_{|e| <= rho} L(w + e) - L(w)

Average case, as Allegro-Legato's ``measure_sharpness.py`` (Ibayashi et al. 2023):
the mean of L(w + sigma z) - L(w) over samples of Gaussian noise z, one N(0, 1) number
per weight, sigma 0.05 there.

L is the model's own training loss: the weights of its training config's MSE terms
(per-atom energy, forces, Wannier vectors), stored in the model file as
``loss_weights`` by `legato train`. Measured on labelled frames.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch

from legato.fields import WANNIER_DISP

#: the loss terms sharpness can evaluate (a model's weight for any other must be 0)
LOSS_TERMS = ("per_atom_energy", "forces", "wannier_disp")


def loss_weights_of(metadata: dict, override: dict | None = None) -> dict:
    """The loss weights sharpness uses: ``override`` where given, else the model file's
    ``loss_weights``. ValueError (one line, with the fix) where neither is there or a term
    is one this module cannot evaluate."""
    weights = override if override is not None else metadata.get("loss_weights")
    if weights is None:
        raise ValueError("the model file records no training loss weights (exported before they were stored): give them, e.g. --loss-weights per_atom_energy=100,forces=10,wannier_disp=1000")
    unknown = sorted(k for k, v in weights.items() if k not in LOSS_TERMS and float(v) != 0.0)
    if unknown:
        raise ValueError(f"loss terms {unknown} have no sharpness estimate yet: give --loss-weights with {', '.join(LOSS_TERMS)} only")
    weights = {k: float(weights.get(k, 0.0)) for k in LOSS_TERMS}
    if any(v < 0 for v in weights.values()) or not any(v > 0 for v in weights.values()):
        raise ValueError(f"loss weights {weights}: give weights >= 0, at least one of them > 0")
    return weights


def parse_loss_weights(text: str) -> dict:
    """``per_atom_energy=100,forces=10,wannier_disp=1000`` -> a dict; ValueError naming the bad part."""
    weights = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--loss-weights {text}: '{part}' is not NAME=NUMBER (e.g. forces=10)") from None
    return weights


@contextmanager
def _weights_restored(params: list[torch.nn.Parameter]):
    """Yields a copy of ``params``' values, and puts them back on exit (also after an error)."""
    origin = [p.detach().clone() for p in params]
    try:
        yield origin
    finally:
        with torch.no_grad():
            for p, o in zip(params, origin):
                p.copy_(o)


def sharpness(loss_fn, params: list[torch.nn.Parameter], rho: float, restarts: int = 3, steps: int = 10, seed: int = 0) -> float:
    """Max of ``loss_fn() - L(w)`` over perturbations of norm <= rho (weights restored after)."""
    with _weights_restored(params) as origin:
        return _ascent(loss_fn, params, origin, rho, restarts, steps, seed)


def _ascent(loss_fn, params, origin, rho: float, restarts: int, steps: int, seed: int) -> float:
    gen = torch.Generator().manual_seed(seed)
    # losses are evaluated with autograd on: force models differentiate inside the loss
    base = float(loss_fn().detach())
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
    return best


def average_sharpness(loss_fn, params: list[torch.nn.Parameter], sigma: float, samples: int = 100, seed: int = 0) -> tuple[float, float]:
    """Mean and standard error of ``loss_fn()`` at w + sigma z minus at w, z ~ N(0, 1) per
    weight, over ``samples`` draws (weights restored after)."""
    gen = torch.Generator().manual_seed(seed)
    base = float(loss_fn().detach())
    increases = []
    with _weights_restored(params) as origin:
        for _ in range(samples):
            with torch.no_grad():
                for p, o in zip(params, origin):
                    p.copy_(o + sigma * torch.randn(p.shape, generator=gen, dtype=p.dtype))
            increases.append(float(loss_fn().detach()) - base)
    mean = sum(increases) / len(increases)
    spread = math.sqrt(sum((x - mean) ** 2 for x in increases) / max(1, len(increases) - 1))
    return mean, spread / math.sqrt(len(increases))


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


def sharpness_of_file(
    model, data, rho: float, restarts: int = 3, steps: int = 10, loss_weights: dict | None = None, sigma: float | None = 0.05, samples: int = 100
) -> dict:
    """`legato sharpness`: both estimates on the labelled frames of ``data`` for the model
    file's own training loss (``loss_weights`` overrides it). Returns ``loss_weights``,
    ``worst_case`` (:func:`sharpness` at ``rho``) and, unless ``sigma`` is None,
    ``average_case`` (mean, standard error; :func:`average_sharpness`)."""
    from legato.dataset import load_dataset
    from legato.modelfile import load_model

    net, meta = load_model(model)
    weights = loss_weights_of(meta, loss_weights)
    net.train()  # forces must stay differentiable w.r.t. the weights (no dropout/batch norm in Allegro)
    batch = frames_to_batch(load_dataset(data, meta["type_names"]), meta["type_names"], meta["r_max"])
    loss = model_loss(net, batch, weights)
    params = [p for p in net.parameters() if p.requires_grad]
    torch.manual_seed(0)
    result = {"loss_weights": weights, "worst_case": sharpness(loss, params, rho, restarts=restarts, steps=steps)}
    if sigma is not None:
        result["average_case"] = average_sharpness(loss, params, sigma, samples)
    return result
