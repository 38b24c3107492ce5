"""Whether a graph can run in bf16: convolutions whose folded bias cancels most of their sum.

bf16 keeps 8 significant bits: every activation is rounded to a relative 2^-9. Where a convolution's
folded batch norm subtracts a large offset from a large sum (``W * x`` far bigger than ``W * x + b``),
the rounding of its inputs is amplified by the ratio of the two. In rembg's U²-Netp (``u2netp``),
``stage2d.rebnconv1d`` sums to about 200 on average and ends near 0.4, a ratio of about 420: in bf16
its output is mostly noise and the served matte lost 0.4-2.9 points of IoU on seven of the nine evaluation sets
(bench/runtime_gate.py). Keeping that convolution alone in f32 does not help, since its inputs were
already rounded by the layers before it (measured: the logits still differed by 1.4 on average), so
such a graph runs in f32 as a whole. The ratio is a property of the weights: a grey picture, random
noise and a photo gave the same flagged layers, within a quarter of the same ratio, for IS-Net, the
sky network and U²-Netp (BENCHMARKS.md, "Keeping a part in f32").
"""

from __future__ import annotations

import numpy as np

# bf16's relative rounding (2^-9) times the ratio is the error the flagged output carries: 8 keeps it under 1.6%. The
# largest ratio of IS-Net and the sky network is 3-4; U²-Netp's two flagged layers 13 and 420: any limit from 5 to 13
# flags the same layers.
CANCELLATION_LIMIT = 8.0
RULE_VERSION = 1  # part of the key answers are remembered under (openvino_backend): change it with the rule


def _is_bias(tensor, convolution) -> bool:
    """A per-channel constant (``1 x C x 1 x 1``, as the ONNX importer reshapes a convolution's bias), not the convolution itself."""
    shape = tensor.get_partial_shape()
    return tensor.get_node() is not convolution and shape.is_static and len(shape) == 4 and [shape[0].get_length(), shape[2].get_length(), shape[3].get_length()] == [1, 1, 1]


def biased_convolutions(model) -> list[tuple[object, object]]:
    """Each convolution with the bias ``Add`` that follows it (how batch norm folds into a convolution)."""
    pairs = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Convolution":
            continue
        adds = [target.get_node() for target in op.output(0).get_target_inputs() if target.get_node().get_type_name() == "Add"]
        if len(adds) == 1 and any(_is_bias(port.get_source_output(), op) for port in adds[0].inputs()):
            pairs.append((op, adds[0]))
    return pairs


def cancelling_convolutions(core, model, probe: np.ndarray) -> dict[str, float]:
    """The convolutions of ``model`` whose mean |W x| exceeds CANCELLATION_LIMIT times their mean |W x + b| on ``probe``, with that ratio.

    ``probe``: one model input (``1 x 3 x H x W`` float32, normalised as the network expects). Costs one f32 forward
    that keeps every convolution's output, before and after its bias.
    """
    import openvino as ov

    pairs = biased_convolutions(model)
    if not pairs:
        return {}
    watched = ov.Model([out for conv, add in pairs for out in (conv.output(0), add.output(0))], model.get_parameters(), "cancellation")
    results = core.compile_model(watched, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(probe)
    flagged = {}
    for index, (conv, _) in enumerate(pairs):
        before, after = float(np.abs(results[2 * index]).mean()), float(np.abs(results[2 * index + 1]).mean())
        if before > CANCELLATION_LIMIT * max(after, 1e-12):
            flagged[conv.get_friendly_name()] = round(before / max(after, 1e-12), 1)
    return flagged
