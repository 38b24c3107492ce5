"""The building blocks of IS-Net and U²-Net: residual U-blocks (RSU) of 3x3 conv + ReLU layers.

BatchNorm is folded into the convolutions of every set of weights we ship, so
each ``ConvReLU`` is a biased 3x3 convolution followed by ReLU. Attribute names
follow the original module paths (``rebnconvin.conv`` and so on) so weights load
by name, strictly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvReLU(nn.Module):
    """3x3 convolution (BatchNorm folded in) and ReLU; ``dilation`` widens the field."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x), inplace=True)


def upsample_like(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=reference.shape[2:], mode="bilinear", align_corners=False)


def downsample(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 2, stride=2, ceil_mode=True)


class RSU(nn.Module):
    """Residual U-block of ``depth`` levels (RSU-7 ... RSU-4 in the paper).

    The encoder halves the resolution ``depth - 2`` times; the bottom level uses
    dilation 2 instead of another pooling; the decoder concatenates skip
    connections and upsamples back; the block's input projection is added at the end.
    """

    def __init__(self, depth: int, in_channels: int, mid_channels: int, out_channels: int) -> None:
        super().__init__()
        self.depth = depth
        self.rebnconvin = ConvReLU(in_channels, out_channels)
        self.rebnconv1 = ConvReLU(out_channels, mid_channels)
        for level in range(2, depth):
            self.add_module(f"rebnconv{level}", ConvReLU(mid_channels, mid_channels))
        self.add_module(f"rebnconv{depth}", ConvReLU(mid_channels, mid_channels, dilation=2))
        for level in range(depth - 1, 1, -1):
            self.add_module(f"rebnconv{level}d", ConvReLU(mid_channels * 2, mid_channels))
        self.rebnconv1d = ConvReLU(mid_channels * 2, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_in = self.rebnconvin(x)
        skips = [self.rebnconv1(x_in)]
        for level in range(2, self.depth):
            skips.append(getattr(self, f"rebnconv{level}")(downsample(skips[-1])))
        x = getattr(self, f"rebnconv{self.depth}")(skips[-1])
        for level in range(self.depth - 1, 0, -1):
            x = getattr(self, f"rebnconv{level}d")(torch.cat((x, skips[level - 1]), 1))
            if level > 1:
                x = upsample_like(x, skips[level - 2])
        return x + x_in


class RSU4F(nn.Module):
    """RSU-4F: the resolution-keeping variant for the coarsest stages (dilations 1, 2, 4, 8)."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int) -> None:
        super().__init__()
        self.rebnconvin = ConvReLU(in_channels, out_channels)
        self.rebnconv1 = ConvReLU(out_channels, mid_channels, dilation=1)
        self.rebnconv2 = ConvReLU(mid_channels, mid_channels, dilation=2)
        self.rebnconv3 = ConvReLU(mid_channels, mid_channels, dilation=4)
        self.rebnconv4 = ConvReLU(mid_channels, mid_channels, dilation=8)
        self.rebnconv3d = ConvReLU(mid_channels * 2, mid_channels, dilation=4)
        self.rebnconv2d = ConvReLU(mid_channels * 2, mid_channels, dilation=2)
        self.rebnconv1d = ConvReLU(mid_channels * 2, out_channels, dilation=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_in = self.rebnconvin(x)
        x1 = self.rebnconv1(x_in)
        x2 = self.rebnconv2(x1)
        x3 = self.rebnconv3(x2)
        x4 = self.rebnconv4(x3)
        x = self.rebnconv3d(torch.cat((x4, x3), 1))
        x = self.rebnconv2d(torch.cat((x, x2), 1))
        x = self.rebnconv1d(torch.cat((x, x1), 1))
        return x + x_in


def check_input_size(x: torch.Tensor) -> None:
    if x.shape[-2] % 32 or x.shape[-1] % 32:
        raise ValueError(f"height and width must be multiples of 32, got {tuple(x.shape[-2:])}")


def encoder_decoder(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The six-stage RSU encoder and five-stage decoder IS-Net and U²-Net share.

    ``model`` has stages ``stage1``..``stage6`` and ``stage5d``..``stage1d``; each decoder stage reads the
    one below it, upsampled, beside the encoder stage of its size. Returns ``(d1, d2, d3, d4, d5, x6)``:
    the decoder's outputs finest first, then the deepest encoder stage, which the side outputs read.
    """
    x1 = model.stage1(x)
    x2 = model.stage2(downsample(x1))
    x3 = model.stage3(downsample(x2))
    x4 = model.stage4(downsample(x3))
    x5 = model.stage5(downsample(x4))
    x6 = model.stage6(downsample(x5))

    d5 = model.stage5d(torch.cat((upsample_like(x6, x5), x5), 1))
    d4 = model.stage4d(torch.cat((upsample_like(d5, x4), x4), 1))
    d3 = model.stage3d(torch.cat((upsample_like(d4, x3), x3), 1))
    d2 = model.stage2d(torch.cat((upsample_like(d3, x2), x2), 1))
    d1 = model.stage1d(torch.cat((upsample_like(d2, x1), x1), 1))
    return d1, d2, d3, d4, d5, x6
