"""The project's own module for each ported family in the catalogue, and how converted weights load into it."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from app.inference.isnet import ISNet
from app.inference.u2net import U2Net, U2NetP

MODULES: dict[str, Callable[[], nn.Module]] = {"isnet": ISNet, "u2net": U2Net, "u2netp": U2NetP}


def loader(family: str) -> Callable[..., nn.Module]:
    """``load(path, device=..., dtype=...)`` for ``family``: the module, its safetensors loaded by name (strict)."""
    build = MODULES[family]

    def load(path: Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
        from safetensors.torch import load_file

        model = build()
        model.load_state_dict(load_file(str(path)), strict=True)
        return model.to(device=device, dtype=dtype).eval()

    return load
