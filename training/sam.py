"""Sharpness-aware minimization (SAM) as a nequip Lightning training module.

Allegro-Legato trains w* = argmin_w [ L(w) + max_{|e| <= rho} (L(w + e) - L(w)) ].
Each step (Foret et al., ICLR 2021):

1. g = grad L(w) on the batch;
2. ascend: w <- w + e with e = rho * g / |g|  (|.| the global 2-norm);
3. g_sam = grad L(w + e) on the same batch;
4. restore w and let the optimizer step with g_sam.

``rho = 0`` skips steps 2-3, which is exactly the plain optimizer step, so the
Adam baseline runs through this same module. Manual optimization follows
nequip's own ``ConFIGLightningModule``; ``EMASAMLightningModule`` adds nequip's
moving average of the weights the way ``EMAConFIGLightningModule`` does.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Optional

import torch
from nequip.data import AtomicDataDict
from nequip.train import EMALightningModule, NequIPLightningModule


def sam_perturbation(params: list[torch.nn.Parameter], rho: float, eps: float = 1e-12) -> list[torch.Tensor]:
    """e = rho * g / |g| for parameters whose ``.grad`` holds g (zeros where no grad)."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = rho / (norm + eps)
    return [g * scale for g in grads]


@contextlib.contextmanager
def ascended(params: list[torch.nn.Parameter], rho: float):
    """Within the block the weights are w + e (``sam_perturbation`` of their ``.grad``); after it, w again."""
    with torch.no_grad():
        perturbation = sam_perturbation(params, rho)
        for p, e in zip(params, perturbation):
            p.add_(e)
    try:
        yield
    finally:
        with torch.no_grad():
            for p, e in zip(params, perturbation):
                p.sub_(e)


class SAMLightningModule(NequIPLightningModule):
    """:class:`nequip.train.NequIPLightningModule` whose optimizer steps are SAM steps.

    Args:
        rho (float): radius of the weight-space ball (0 gives the plain optimizer)
        gradient_clip_val (float, optional): clip the SAM gradient by this norm
        **kwargs: as for ``NequIPLightningModule``
    """

    def __init__(self, rho: float = 0.05, gradient_clip_val: Optional[float] = None, **kwargs):
        super().__init__(**kwargs)
        if rho < 0:
            raise ValueError(f"SAM rho must be >= 0, got {rho}")
        self.automatic_optimization = False
        self.rho = float(rho)
        self.gradient_clip_val = gradient_clip_val
        # a stateless twin of the loss for the ascent pass, so that the logged
        # epoch loss only accumulates the loss at w
        self._ascent_loss = copy.deepcopy(self.loss)
        if self.lr_scheduler_config is not None:
            scheduler = self.lr_scheduler_config["scheduler"]["_target_"]
            if "ReduceLROnPlateau" not in scheduler:
                raise ValueError(f"SAM training supports ReduceLROnPlateau only, got {scheduler}")
            self._monitor = self.lr_scheduler_config["monitor"]

    def _weighted_loss(self, metrics, batch, batch_idx, dataloader_idx, prefix: str):
        target = self.process_target(batch, batch_idx, dataloader_idx)
        output = self(batch)
        loss_dict = metrics(output, target, prefix=prefix)
        return loss_dict, output, target

    def training_step(self, batch: AtomicDataDict.Type, batch_idx: int, dataloader_idx: int = 0):
        prefix = f"train_loss_step{self.logging_delimiter}"
        loss_dict, output, target = self._weighted_loss(self.loss, batch, batch_idx, dataloader_idx, prefix)
        if self.train_metrics is not None:
            with torch.no_grad():
                self.log_dict(self.train_metrics(output, target, prefix=f"train_metric_step{self.logging_delimiter}"))
        self.log_dict(loss_dict)
        loss = loss_dict[prefix + "weighted_sum"] * self.world_size

        opt = self.optimizers()
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)

        if self.rho > 0:
            with ascended([p for p in self.model.parameters() if p.requires_grad], self.rho):
                opt.zero_grad(set_to_none=True)
                ascent_dict, _, _ = self._weighted_loss(self._ascent_loss, batch, batch_idx, dataloader_idx, prefix)
                self._ascent_loss.reset()
                self.manual_backward(ascent_dict[prefix + "weighted_sum"] * self.world_size)
            self.log(f"train_loss_step{self.logging_delimiter}sam_ascent", ascent_dict[prefix + "weighted_sum"].detach())

        if self.gradient_clip_val is not None:
            self.clip_gradients(opt, gradient_clip_val=self.gradient_clip_val, gradient_clip_algorithm="norm")
        opt.step()
        return loss.detach()

    def on_validation_epoch_end(self):
        metric_dict = {}
        for idx, metrics in enumerate(self.val_metrics):
            metric_dict.update(metrics.compute(prefix=f"val{idx}_epoch{self.logging_delimiter}"))
            metrics.reset()
        self.log_dict(metric_dict)
        # manual optimization: Lightning does not step schedulers for us
        scheduler = self.lr_schedulers()
        if scheduler is not None and not self.trainer.sanity_checking:
            scheduler.step(metric_dict[self._monitor])


class EMASAMLightningModule(EMALightningModule, SAMLightningModule):
    """SAM (or Adam, ``rho = 0``) steps, and an exponential moving average of the weights
    that validation, checkpoints and the exported model use (:class:`nequip.train.EMALightningModule`).

    Args:
        ema_decay (float): decay of the average per optimizer step (nequip's default 0.999)
        **kwargs: as for :class:`SAMLightningModule`
    """

    def training_step(self, batch: AtomicDataDict.Type, batch_idx: int, dataloader_idx: int = 0):
        loss = super().training_step(batch, batch_idx, dataloader_idx)
        self.ema.update_parameters(self.model)  # manual optimization: Lightning never calls optimizer_step
        return loss
