"""U²-Net and U²-Netp (Qin et al., Pattern Recognition 2020): six RSU encoder stages, five decoder stages.

The same RSU blocks as IS-Net (:mod:`app.inference.rsu`), with no strided input convolution; a 3x3
side output per stage and a 1x1 convolution fusing the six. U²-Net and U²-Netp differ only in
their widths. Parameter names follow the original ``U2NET`` / ``U2NETP`` modules
(``stage1.rebnconvin.conv.weight``, ``side1.weight``, ``outconv.weight``), so weights load by name, strictly.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from app.inference.rsu import RSU, RSU4F, check_input_size, encoder_decoder

# (in, middle, out) channels of each stage, encoder stage1..stage6 then decoder stage5d..stage1d.
U2NET_WIDTHS = (
    (3, 32, 64), (64, 32, 128), (128, 64, 256), (256, 128, 512), (512, 256, 512), (512, 256, 512),
    (1024, 256, 512), (1024, 128, 256), (512, 64, 128), (256, 32, 64), (128, 16, 64),
)
U2NETP_WIDTHS = ((3, 16, 64),) + ((64, 16, 64),) * 5 + ((128, 16, 64),) * 5
_DEPTHS = (7, 6, 5, 4, 0, 0, 0, 4, 5, 6, 7)  # RSU depth per stage; 0: RSU-4F
_NAMES = ("stage1", "stage2", "stage3", "stage4", "stage5", "stage6", "stage5d", "stage4d", "stage3d", "stage2d", "stage1d")


def _stage(depth: int, channels: tuple[int, int, int]) -> nn.Module:
    return RSU4F(*channels) if depth == 0 else RSU(depth, *channels)


class U2Net(nn.Module):
    """Input ``N x 3 x H x W`` (H and W multiples of 32); output ``N x 1 x H x W`` logits of the fused map."""

    def __init__(self, widths: tuple[tuple[int, int, int], ...] = U2NET_WIDTHS, out_channels: int = 1) -> None:
        super().__init__()
        for name, depth, channels in zip(_NAMES, _DEPTHS, widths):
            self.add_module(name, _stage(depth, channels))
        # Side outputs read stage1d ... stage5d and stage6, finest first.
        side_inputs = [widths[index][2] for index in (10, 9, 8, 7, 6, 5)]
        for index, channels in enumerate(side_inputs, start=1):
            self.add_module(f"side{index}", nn.Conv2d(channels, out_channels, 3, padding=1))
        self.outconv = nn.Conv2d(6 * out_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x)
        # Side outputs in the original's order (finest first), all at the input's size, then fused.
        sides = [
            F.interpolate(getattr(self, f"side{index}")(features), size=x.shape[2:], mode="bilinear", align_corners=False)
            for index, features in enumerate(encoder_decoder(self, x), start=1)
        ]
        return self.outconv(torch.cat(sides, 1))


class U2NetP(U2Net):
    """U²-Netp: 16 middle channels and 64 out throughout (4.6 MB of weights)."""

    def __init__(self, out_channels: int = 1) -> None:
        super().__init__(U2NETP_WIDTHS, out_channels)


def load_u2netp(path: Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> U2NetP:
    """Build U²-Netp and load converted weights from a safetensors file (strict names)."""
    from safetensors.torch import load_file

    model = U2NetP()
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.to(device=device, dtype=dtype).eval()
