"""SAM steps checked against updates computed by hand."""

import copy

import pytest
import torch

from legato.training.sam import sam_perturbation
from legato.training.train import prepare, train

from conftest import tiny_train_config


def one_step_config(data, out, rho, optimizer):
    cfg = tiny_train_config(data, out, epochs=1, rho=rho, batch_size=1000, optimizer=optimizer)
    cfg.trainer.max_steps = 1
    return cfg


def full_batch_loss(module, datamodule):
    """The training loss on the whole training split (one batch), from a stateless copy."""
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    metrics = copy.deepcopy(module.loss)
    return lambda: metrics(module(batch), batch, prefix="")["weighted_sum"]


def hand_step(cfg, rho, step):
    """Weights after one SAM step done by hand: g at w + rho g/|g|, then ``step``."""
    cfg, datamodule, module, *_ = prepare(cfg)
    loss = full_batch_loss(module, datamodule)
    params = list(module.model.parameters())
    module.zero_grad()
    loss().backward()
    if rho > 0:
        with torch.no_grad():
            e = sam_perturbation(params, rho)
            for p, d in zip(params, e):
                p.add_(d)
        module.zero_grad()
        loss().backward()
        with torch.no_grad():
            for p, d in zip(params, e):
                p.sub_(d)
    step(params)
    return {k: v.detach().clone() for k, v in module.model["sole_model"].state_dict().items()}


def trained_weights(model_file):
    return torch.load(model_file, weights_only=True)["state_dict"]


def sgd(lr):
    def step(params):
        with torch.no_grad():
            for p in params:
                if p.grad is not None:
                    p.sub_(lr * p.grad)

    return step


def adam(lr):
    def step(params):
        opt = torch.optim.Adam(params, lr=lr)
        opt.step()

    return step


@pytest.mark.parametrize("rho", [0.05, 0.0])
def test_one_sgd_step_matches_hand_computed_sam(synthetic_dataset, tmp_path, rho):
    cfg = one_step_config(synthetic_dataset, tmp_path / "run", rho, {"_target_": "torch.optim.SGD", "lr": 0.01})
    trained = trained_weights(train(cfg, progress=False))
    expected = hand_step(one_step_config(synthetic_dataset, tmp_path / "hand", rho, {"_target_": "torch.optim.SGD", "lr": 0.01}), rho, sgd(0.01))
    initial = hand_step(one_step_config(synthetic_dataset, tmp_path / "init", rho, {"_target_": "torch.optim.SGD", "lr": 0.01}), rho, lambda p: None)
    moved = max((trained[k] - initial[k]).abs().max().item() for k in trained if trained[k].numel())
    assert moved > 1e-6  # the step did something
    for k in trained:
        torch.testing.assert_close(trained[k], expected[k], rtol=1e-9, atol=1e-12)


def test_rho_zero_is_exactly_the_adam_step(synthetic_dataset, tmp_path):
    opt = {"_target_": "torch.optim.Adam", "lr": 0.003}
    trained = trained_weights(train(one_step_config(synthetic_dataset, tmp_path / "run", 0.0, opt), progress=False))
    expected = hand_step(one_step_config(synthetic_dataset, tmp_path / "hand", 0.0, opt), 0.0, adam(0.003))
    for k in trained:
        torch.testing.assert_close(trained[k], expected[k], rtol=1e-9, atol=1e-12)


def test_sam_and_adam_steps_differ(synthetic_dataset, tmp_path):
    opt = {"_target_": "torch.optim.SGD", "lr": 0.01}
    a = trained_weights(train(one_step_config(synthetic_dataset, tmp_path / "a", 0.0, opt), progress=False))
    b = trained_weights(train(one_step_config(synthetic_dataset, tmp_path / "b", 0.2, opt), progress=False))
    assert max((a[k] - b[k]).abs().max().item() for k in a if a[k].numel()) > 1e-6


def test_perturbation_has_norm_rho():
    params = [torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(5))]
    for p in params:
        p.grad = torch.randn_like(p)
    e = sam_perturbation(params, 0.3)
    norm = torch.sqrt(sum((x**2).sum() for x in e))
    assert norm.item() == pytest.approx(0.3, rel=1e-6)
    assert torch.allclose(e[0] / params[0].grad, e[1][0] / params[1].grad[0])
