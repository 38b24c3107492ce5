"""IS-Net (DIS, Qin et al., ECCV 2022): the RSU encoder-decoder with side outputs.

Written from the paper and the published graph, from the RSU blocks in
:mod:`app.inference.rsu`. Parameter names follow the original module paths
(``stage1.rebnconvin.conv.weight`` and so on) so weights load by name, strictly.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from app.inference.rsu import RSU, RSU4F, check_input_size, encoder_decoder


class ISNet(nn.Module):
    """IS-Net for dichotomous image segmentation.

    Input: ``N x 3 x H x W`` with H and W multiples of 32, normalised as
    ``(x - 128) / 256`` on 0-255 RGB. Output: ``N x 1 x H x W`` logits of the
    finest side output (apply a sigmoid for the matte). ``side_outputs=True``
    returns all six logits, finest first, as the training code does.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 1) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, 64, 3, stride=2, padding=1)

        self.stage1 = RSU(7, 64, 32, 64)
        self.stage2 = RSU(6, 64, 32, 128)
        self.stage3 = RSU(5, 128, 64, 256)
        self.stage4 = RSU(4, 256, 128, 512)
        self.stage5 = RSU4F(512, 256, 512)
        self.stage6 = RSU4F(512, 256, 512)

        self.stage5d = RSU4F(1024, 256, 512)
        self.stage4d = RSU(4, 1024, 128, 256)
        self.stage3d = RSU(5, 512, 64, 128)
        self.stage2d = RSU(6, 256, 32, 64)
        self.stage1d = RSU(7, 128, 16, 64)

        self.side1 = nn.Conv2d(64, out_channels, 3, padding=1)
        self.side2 = nn.Conv2d(64, out_channels, 3, padding=1)
        self.side3 = nn.Conv2d(128, out_channels, 3, padding=1)
        self.side4 = nn.Conv2d(256, out_channels, 3, padding=1)
        self.side5 = nn.Conv2d(512, out_channels, 3, padding=1)
        self.side6 = nn.Conv2d(512, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, side_outputs: bool = False) -> torch.Tensor | list[torch.Tensor]:
        check_input_size(x)
        size = x.shape[2:]
        d1, d2, d3, d4, d5, x6 = encoder_decoder(self, self.conv_in(x))
        finest = F.interpolate(self.side1(d1), size=size, mode="bilinear", align_corners=False)
        if not side_outputs:
            return finest
        coarser = [
            F.interpolate(side(features), size=size, mode="bilinear", align_corners=False)
            for side, features in ((self.side2, d2), (self.side3, d3), (self.side4, d4), (self.side5, d5), (self.side6, x6))
        ]
        return [finest, *coarser]


def load_isnet(path: Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> ISNet:
    """Build IS-Net and load converted weights from a safetensors file (strict names)."""
    from safetensors.torch import load_file

    model = ISNet()
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.to(device=device, dtype=dtype).eval()
