"""Allegro energy/forces model with a Wannier-centre head, built from nequip modules.

The head turns Allegro's final scalar edge features h_ij into one equivariant
vector per atom, the displacement (Angstrom) of that atom's MLWF centroid:

    d_i = (1 / avg_num_neighbors) * sum_j s(h_ij) * r_ij,

with s a scalar MLP and r_ij the edge vector. It is equivariant by construction
and strictly local (r_ij < r_max). It runs in the same forward pass as the
energy, so one model call gives energy, forces, virial and Wannier vectors.
"""

from __future__ import annotations

from typing import Optional

import torch
from allegro.model import AllegroModel
from nequip.data import AtomicDataDict
from nequip.model import model_builder
from nequip.nn import ForceStressOutput, GraphModuleMixin
from nequip.nn.mlp import ScalarMLPFunction
from nequip.nn.utils import scatter

from legato.fields import WANNIER_DISP


class EdgeVectorReadout(GraphModuleMixin, torch.nn.Module):
    """Per-atom vector ``sum_j s(h_ij) r_ij / avg_num_neighbors`` from edge scalars."""

    def __init__(
        self,
        irreps_in,
        avg_num_neighbors: float,
        hidden_layers_depth: int = 1,
        hidden_layers_width: int = 32,
        field: str = AtomicDataDict.EDGE_FEATURES_KEY,
        out_field: str = WANNIER_DISP,
    ):
        super().__init__()
        self.field = field
        self.out_field = out_field
        self._init_irreps(irreps_in=irreps_in, required_irreps_in=[field], irreps_out={out_field: "1x1o"})
        feature_irreps = self.irreps_in[field]
        if feature_irreps.lmax != 0:
            raise ValueError("EdgeVectorReadout needs scalar edge features")
        self.weight_mlp = ScalarMLPFunction(
            input_dim=feature_irreps.dim,
            output_dim=1,
            hidden_layers_depth=hidden_layers_depth,
            hidden_layers_width=hidden_layers_width,
            nonlinearity="silu",
        )
        self.inv_avg_num_neighbors = 1.0 / float(avg_num_neighbors)

    def forward(self, data: AtomicDataDict.Type) -> AtomicDataDict.Type:
        weights = self.weight_mlp(data[self.field])
        edge_vectors = data[AtomicDataDict.EDGE_VECTORS_KEY]
        centres = data[AtomicDataDict.EDGE_INDEX_KEY][0]
        num_atoms = AtomicDataDict.num_nodes(data)
        vectors = scatter(weights * edge_vectors, centres, dim=0, dim_size=num_atoms)
        data[self.out_field] = vectors * self.inv_avg_num_neighbors
        return data


@model_builder
def AllegroWannierModel(
    l_max: int = 1,
    parity: bool = True,
    avg_num_neighbors: float = 20.0,
    wannier_mlp_hidden_layers_depth: int = 1,
    wannier_mlp_hidden_layers_width: int = 32,
    **allegro_kwargs,
):
    """Allegro (``allegro.model.AllegroModel``) plus :class:`EdgeVectorReadout`.

    Takes every argument of ``AllegroModel`` and the width/depth of the
    Wannier head's scalar MLP.
    """
    allegro = AllegroModel(l_max=l_max, parity=parity, avg_num_neighbors=avg_num_neighbors, **allegro_kwargs)
    energy_model = allegro.func
    head = EdgeVectorReadout(
        irreps_in=energy_model.irreps_out,
        avg_num_neighbors=avg_num_neighbors,
        hidden_layers_depth=wannier_mlp_hidden_layers_depth,
        hidden_layers_width=wannier_mlp_hidden_layers_width,
    )
    energy_model.append("wannier_head", head)
    return ForceStressOutput(energy_model, do_derivatives=allegro.do_derivatives)


def require_cxx_compiler() -> None:
    """torch.compile on a CPU builds C++: raise ValueError (one line, with the fix) if no compiler works."""
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        get_cpp_compiler()
    except Exception as exc:  # torch raises its own InvalidCxxCompiler
        raise ValueError(f"no C++ compiler for torch.compile ({type(exc).__name__}); install g++") from exc


def build_model(model_config: dict, type_names: list[str], seed: int = 0, model_dtype: Optional[str] = None, compile_mode: str = "eager"):
    """Build an :func:`AllegroWannierModel` from a plain config dict (no Hydra).

    ``compile_mode="compile"``: nequip's ``CompileGraphModel``, which torch.compiles the
    model on its first call with two or more frames (calls on one frame run eager).
    """
    from nequip.utils.global_state import global_state_initialized, set_global_state

    if not global_state_initialized():
        set_global_state()
    cfg = {k: v for k, v in model_config.items() if k != "_target_"}
    cfg.setdefault("model_dtype", model_dtype or "float32")
    cfg["compile_mode"] = compile_mode  # how to run it here, whatever the config trained with
    return AllegroWannierModel(seed=seed, type_names=list(type_names), **cfg)
