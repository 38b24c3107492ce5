"""Turn the IS-Net ONNX graph into a state dict for :class:`app.inference.isnet.ISNet`.

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
