"""The IS-Net module: shapes, sizes, batch, dtypes and memory formats."""

from __future__ import annotations

import pytest
import torch

from app.inference.isnet import load_isnet


@pytest.fixture(scope="module")
def model(weights):
    return load_isnet(weights)


@torch.inference_mode()
def test_any_batch_and_any_multiple_of_32(model):
    out = model(torch.randn(2, 3, 96, 160))
    assert out.shape == (2, 1, 96, 160)
    single = model(torch.randn(1, 3, 64, 64))
    assert single.shape == (1, 1, 64, 64)


@torch.inference_mode()
def test_batch_rows_are_independent(model):
    x = torch.randn(3, 3, 128, 96)
    together = model(x)
    alone = torch.cat([model(x[i : i + 1]) for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-4)


def test_side_outputs_are_six_full_size_logits(model):
    with torch.inference_mode():
        sides = model(torch.randn(1, 3, 64, 64), side_outputs=True)
    assert len(sides) == 6 and all(s.shape == (1, 1, 64, 64) for s in sides)


def test_sizes_not_multiple_of_32_are_refused(model):
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.randn(1, 3, 100, 96))


@torch.inference_mode()
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_agrees_with_fp32(model, weights, dtype):
    x = torch.rand(1, 3, 128, 128) - 0.5
    reference = torch.sigmoid(model(x))
    reduced = load_isnet(weights, dtype=dtype)
    out = torch.sigmoid(reduced(x.to(dtype)).float())
    assert (out - reference).abs().mean() < 0.02


@torch.inference_mode()
def test_channels_last_gives_the_same_result(model, weights):
    x = torch.rand(1, 3, 128, 128) - 0.5
    reference = model(x)
    cl = load_isnet(weights).to(memory_format=torch.channels_last)
    out = cl(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(out, reference, atol=1e-3)
