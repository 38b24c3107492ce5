"""Turn an ncnn model (``.param`` text graph + ``.bin`` weights) into a state dict for a PyTorch module.

ncnn keeps no parameter names, only layers in execution order. So the module is
run once on a dummy input with a hook on every ``Conv2d``, and the graph's
Convolution layers are matched to the module's convolutions in the order they
execute; every shape, stride, dilation, padding, bias and fused activation is
checked, so a graph that does not fit the module fails loudly instead of
loading scrambled weights. Only the layer types a plain conv network needs are
accepted.

File formats (ncnn's own documentation, "param and model file structure"):
``.param`` is a magic line ``7767517``, a ``layer_count blob_count`` line, then
one line per layer: ``type name inputs outputs bottom... top... key=value...``.
``.bin`` holds each Convolution's weights (a 4-byte tag, then the data: tag
0x01306B47 is fp16, padded to 4 bytes; tag 0 is fp32) followed by its bias as
raw fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

PARAM_MAGIC = 7767517
TAG_FP16 = 0x01306B47
TAG_FP32 = 0
# Layers that carry no weights and whose behaviour the PyTorch module reproduces by construction.
WEIGHTLESS_LAYERS = {"Input", "Split", "Pooling", "Interp", "Concat", "BinaryOp", "Sigmoid", "ReLU"}
ACTIVATIONS = {0: "none", 1: "relu", 4: "sigmoid"}


class NcnnFormatError(ValueError):
    pass


@dataclass(frozen=True)
class ConvLayer:
    """One Convolution layer's parameters, read from its ``key=value`` list (ncnn's defaults where absent)."""

    name: str
    out_channels: int
    kernel: int
    dilation: int
    stride: int
    padding: int
    has_bias: bool
    weight_count: int
    activation: str

    @classmethod
    def from_params(cls, name: str, params: dict[str, str]) -> "ConvLayer":
        def value(key: int, default: int) -> int:
            return int(params.get(str(key), default))

        code = value(9, 0)
        if code not in ACTIVATIONS:
            raise NcnnFormatError(f"{name}: unsupported fused activation {code}")
        return cls(name, value(0, 0), value(1, 0), value(2, 1), value(3, 1), value(4, 0), value(5, 0) == 1, value(6, 0), ACTIVATIONS[code])


def parse_param(text: str) -> list[ConvLayer]:
    """The graph's Convolution layers in order; any layer type that would carry weights we do not read is an error."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != [str(PARAM_MAGIC)]:
        raise NcnnFormatError("not an ncnn .param file (magic number missing)")
    layer_count = int(lines[1][0])
    layers = lines[2:]
    if len(layers) != layer_count:
        raise NcnnFormatError(f"the header declares {layer_count} layers, the file has {len(layers)}")
    convs: list[ConvLayer] = []
    for fields_ in layers:
        kind, name, n_in, n_out = fields_[0], fields_[1], int(fields_[2]), int(fields_[3])
        params = dict(item.split("=", 1) for item in fields_[4 + n_in + n_out :])
        if kind == "Convolution":
            if any(key.startswith("-") for key in params):
                raise NcnnFormatError(f"{name}: array parameters are not supported")
            convs.append(ConvLayer.from_params(name, params))
        elif kind not in WEIGHTLESS_LAYERS:
            raise NcnnFormatError(f"layer {name} of type {kind} is not supported")
    return convs


def read_weights(data: bytes, convs: list[ConvLayer]) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Each convolution's flat weights and bias (fp32 arrays), read in order; the file must be used up exactly."""
    offset = 0
    out: list[tuple[np.ndarray, np.ndarray | None]] = []

    def take(conv: ConvLayer, dtype: str, count: int, padded_bytes: int) -> np.ndarray:
        nonlocal offset
        if offset + padded_bytes > len(data):
            raise NcnnFormatError(f"{conv.name}: the .bin file ends early")
        array = np.frombuffer(data, dtype, count, offset).copy()
        offset += padded_bytes
        return array

    for conv in convs:
        tag = int(take(conv, "<u4", 1, 4)[0])
        count = conv.weight_count
        if tag == TAG_FP16:
            weight = take(conv, "<f2", count, (2 * count + 3) // 4 * 4).astype(np.float32)
        elif tag == TAG_FP32:
            weight = take(conv, "<f4", count, 4 * count)
        else:
            raise NcnnFormatError(f"{conv.name}: unsupported weight storage tag {tag:#x} (only fp16 and fp32)")
        bias = take(conv, "<f4", conv.out_channels, 4 * conv.out_channels) if conv.has_bias else None
        out.append((weight, bias))
    if offset != len(data):
        raise NcnnFormatError(f"{len(data) - offset} bytes of the .bin file are left over: it does not match the .param")
    return out


def convolutions_in_execution_order(module: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Conv2d]]:
    names = {conv: name for name, conv in module.named_modules() if isinstance(conv, nn.Conv2d)}
    order: list[tuple[str, nn.Conv2d]] = []
    hooks = [conv.register_forward_hook(lambda conv, _in, _out: order.append((names[conv], conv))) for conv in names]
    try:
        with torch.no_grad():
            module(example)
    finally:
        for hook in hooks:
            hook.remove()
    return order


def expected_activation(module: nn.Module, conv_name: str) -> str:
    """ReLU for the convolutions inside a ``ConvReLU``; ``none`` elsewhere; the graph may fuse a sigmoid on the output."""
    parent = module.get_submodule(conv_name.rpartition(".")[0]) if "." in conv_name else module
    return "relu" if type(parent).__name__ == "ConvReLU" else "none"


def state_dict_from_ncnn(param_text: str, bin_data: bytes, module: nn.Module, example: torch.Tensor) -> dict[str, torch.Tensor]:
    convs = parse_param(param_text)
    weights = read_weights(bin_data, convs)
    order = convolutions_in_execution_order(module, example)
    if len(order) != len(convs):
        raise NcnnFormatError(f"the graph has {len(convs)} convolutions, the module runs {len(order)}")
    state: dict[str, torch.Tensor] = {}
    for index, (layer, (weight, bias), (name, conv)) in enumerate(zip(convs, weights, order)):
        expected = (conv.out_channels, conv.kernel_size[0], conv.dilation[0], conv.stride[0], conv.padding[0], conv.bias is not None)
        found = (layer.out_channels, layer.kernel, layer.dilation, layer.stride, layer.padding, layer.has_bias)
        if expected != found or weight.size != conv.weight.numel():
            raise NcnnFormatError(f"convolution {index} ({layer.name}) does not fit {name}: {found} vs {expected}")
        wanted = expected_activation(module, name)
        if layer.activation != wanted and not (layer.activation == "sigmoid" and index == len(convs) - 1):
            raise NcnnFormatError(f"{layer.name} fuses {layer.activation}, but {name} is followed by {wanted}")
        state[f"{name}.weight"] = torch.from_numpy(weight.reshape(conv.weight.shape))
        if bias is not None:
            state[f"{name}.bias"] = torch.from_numpy(bias)
    return state
