"""Turn published ONNX graphs into state dicts for the project's own modules (IS-Net, U²-Net).

BatchNorm is already folded into every convolution of the graph, and the
exporter renamed most folded weights (``onnx::Conv_1896``). The Conv node names
still carry the module paths (``/stage1/rebnconvin/conv_s1/Conv``), so each
weight is named from the node that consumes it.
"""

from __future__ import annotations

import re

import numpy as np
import torch

_NODE_PATH = re.compile(r"^/((?:[A-Za-z0-9_]+/)*?)(conv_s1/)?Conv$")


def parameter_prefix(node_name: str) -> str:
    """``/stage1/rebnconvin/conv_s1/Conv`` -> ``stage1.rebnconvin.conv``; ``/side1/Conv`` -> ``side1``."""
    match = _NODE_PATH.match(node_name)
    if match is None:
        raise ValueError(f"unexpected Conv node name {node_name!r}")
    path = match.group(1).rstrip("/").replace("/", ".")
    return f"{path}.conv" if match.group(2) else path


def state_dict_from_onnx(onnx_bytes: bytes) -> dict[str, torch.Tensor]:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(onnx_bytes).graph
    initializers = {init.name: init for init in graph.initializer}
    state: dict[str, torch.Tensor] = {}
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        if len(node.input) != 3:
            raise ValueError(f"{node.name} has no bias: BatchNorm is expected folded into every Conv")
        prefix = parameter_prefix(node.name)
        for suffix, name in zip(("weight", "bias"), node.input[1:]):
            array = np.ascontiguousarray(numpy_helper.to_array(initializers[name]))
            state[f"{prefix}.{suffix}"] = torch.from_numpy(array.copy())
    return state


def conv_call_order(model: torch.nn.Module, side: int = 64) -> list[str]:
    """The names of ``model``'s convolutions in the order its forward calls them (then any it never calls)."""
    order: list[str] = []
    convs = {module: name for name, module in model.named_modules() if isinstance(module, torch.nn.Conv2d)}
    hooks = [module.register_forward_hook(lambda m, i, o: order.append(convs[m])) for module in convs]
    try:
        with torch.inference_mode():
            model.float().eval()(torch.zeros(1, 3, side, side))
    finally:
        for hook in hooks:
            hook.remove()
    return order + [name for name in convs.values() if name not in order]


def state_dict_by_call_order(onnx_bytes: bytes, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A state dict for ``model`` from a graph whose Conv nodes lost their module paths (``Conv_0``, ``Conv_2``...).

    The exporter writes nodes in the order the forward ran them, so the graph's n-th Conv is the
    module's n-th convolution called. Every shape must match, and where the graph kept a parameter's
    name (``side1.weight``) it must be the one it is matched to; the result then loads strictly.
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(onnx_bytes).graph
    initializers = {init.name: init for init in graph.initializer}
    nodes = [node for node in graph.node if node.op_type == "Conv"]
    names = conv_call_order(model)
    if len(nodes) != len(names):
        raise ValueError(f"the graph has {len(nodes)} convolutions; {type(model).__name__} has {len(names)}")
    expected = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    for node, name in zip(nodes, names):
        if len(node.input) != 3:
            raise ValueError(f"{node.name} has no bias: BatchNorm is expected folded into every Conv")
        for suffix, initializer in zip(("weight", "bias"), node.input[1:]):
            key = f"{name}.{suffix}"
            if initializer.endswith((".weight", ".bias")) and initializer != key:
                raise ValueError(f"{node.name} reads {initializer}, but is matched to {key}")
            array = np.ascontiguousarray(numpy_helper.to_array(initializers[initializer]))
            if tuple(array.shape) != tuple(expected[key].shape):
                raise ValueError(f"{node.name} ({initializer}) is {tuple(array.shape)}; {key} is {tuple(expected[key].shape)}")
            state[key] = torch.from_numpy(array.astype(np.float32))
    model.load_state_dict(state, strict=True)  # every name present, nothing left over
    return state
