"""U²-Netp (Qin et al., Pattern Recognition 2020), the small U²-Net, here trained to segment sky.

The same RSU blocks as IS-Net (:mod:`app.inference.rsu`), 16 middle channels
throughout and no strided input convolution: six encoder stages, five decoder
stages, a 3x3 side output per stage and a 1x1 convolution fusing the six.
Parameter names follow the original ``U2NETP`` module (``stage1.rebnconvin.conv.weight``,
``side1.weight``, ``outconv.weight``).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from app.inference.rsu import RSU, RSU4F, downsample, upsample_like

# What the sky weights expect: 0-1 RGB normalised with ImageNet's mean and deviation. The
# published graph takes 384 x 384; the network is fully convolutional, so other sizes run too.
SKY_RESOLUTION = 384
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class U2NetP(nn.Module):
    """Input ``N x 3 x H x W`` (H and W multiples of 32); output ``N x 1 x H x W`` logits of the fused map."""

    def __init__(self, in_channels: int = 3, out_channels: int = 1) -> None:
        super().__init__()
        self.stage1 = RSU(7, in_channels, 16, 64)
        self.stage2 = RSU(6, 64, 16, 64)
        self.stage3 = RSU(5, 64, 16, 64)
        self.stage4 = RSU(4, 64, 16, 64)
        self.stage5 = RSU4F(64, 16, 64)
        self.stage6 = RSU4F(64, 16, 64)

        self.stage5d = RSU4F(128, 16, 64)
        self.stage4d = RSU(4, 128, 16, 64)
        self.stage3d = RSU(5, 128, 16, 64)
        self.stage2d = RSU(6, 128, 16, 64)
        self.stage1d = RSU(7, 128, 16, 64)

        for index in range(1, 7):
            self.add_module(f"side{index}", nn.Conv2d(64, out_channels, 3, padding=1))
        self.outconv = nn.Conv2d(6 * out_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % 32 or x.shape[-1] % 32:
            raise ValueError(f"height and width must be multiples of 32, got {tuple(x.shape[-2:])}")
        x1 = self.stage1(x)
        x2 = self.stage2(downsample(x1))
        x3 = self.stage3(downsample(x2))
        x4 = self.stage4(downsample(x3))
        x5 = self.stage5(downsample(x4))
        x6 = self.stage6(downsample(x5))

        d5 = self.stage5d(torch.cat((upsample_like(x6, x5), x5), 1))
        d4 = self.stage4d(torch.cat((upsample_like(d5, x4), x4), 1))
        d3 = self.stage3d(torch.cat((upsample_like(d4, x3), x3), 1))
        d2 = self.stage2d(torch.cat((upsample_like(d3, x2), x2), 1))
        d1 = self.stage1d(torch.cat((upsample_like(d2, x1), x1), 1))

        # Side outputs in the original's order (finest first), all at the input's size, then fused.
        sides = [
            F.interpolate(getattr(self, f"side{index}")(features), size=x.shape[2:], mode="bilinear", align_corners=False)
            for index, features in enumerate((d1, d2, d3, d4, d5, x6), start=1)
        ]
        return self.outconv(torch.cat(sides, 1))


def load_u2netp(path: Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> U2NetP:
    """Build U²-Netp and load converted weights from a safetensors file (strict names)."""
    from safetensors.torch import load_file

    model = U2NetP()
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.to(device=device, dtype=dtype).eval()
