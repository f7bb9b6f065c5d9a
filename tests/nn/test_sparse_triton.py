"""The optional Triton backend of the sparse convolution: interpreter on CPU, compiled kernel on CUDA.

The kernels are checked in Triton's interpreter (``TRITON_INTERPRET=1``) in a subprocess, because Triton
decides between compiling and interpreting when the kernels are decorated, at import; the rest of the suite
keeps the compiled path. The interpreter runs the same kernel source, not the generated GPU code: the ``gpu``
test compares the compiled kernel with the PyTorch twin.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rezdiff.models.infty_diff import sparse_triton
from rezdiff.models.infty_diff.sparse import (
    GATHER_MAX_DENSITY,
    SparseDepthwiseConv,
    build_neighbours,
    choose_backend,
    sparse_depthwise_conv,
)
from tests.helpers import REPO, random_index

CHECK = Path(__file__).with_name("triton_interpreter_check.py")


@pytest.mark.heavy
def test_interpreter_matches_gather_and_dense_forward_and_backward() -> None:
    """K = 3 and 7, densities 1/16 and 1/4, 2 images, 13 and 67 channels, corners present; fp32/64, bf16."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(CHECK)], capture_output=True, text=True, env=env, cwd=REPO, timeout=300
    )
    checks = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    failed = [check for check in checks if not check["ok"]]
    assert result.returncode == 0 and not failed, (failed, result.stderr[-3000:])
    names = " | ".join(check["check"] for check in checks)
    for kernel_size in (3, 7):
        for density in ("0.0625", "0.25"):
            for other in ("gather", "dense"):
                assert f"K={kernel_size} density={density} C=13 float32: triton vs {other}" in names
    assert "bfloat16: triton vs fp32 gather" in names and "float64: triton vs gather" in names


def test_cpu_tensor_outside_the_interpreter_is_refused() -> None:
    pytest.importorskip("triton")
    if sparse_triton.interpreting():
        pytest.skip("TRITON_INTERPRET=1 is set for this process")
    assert not sparse_triton.triton_available("cpu")
    neighbours = build_neighbours(random_index(1, 6, 6, 10), 6, 3)
    with pytest.raises(RuntimeError, match="CUDA tensors.*backend='gather'"):
        sparse_depthwise_conv(torch.randn(1, 10, 4), torch.randn(4, 3, 3), neighbours, "triton")
    with pytest.raises(RuntimeError, match="CUDA tensors"):
        SparseDepthwiseConv(4, 3, backend="triton")(torch.randn(1, 10, 4), neighbours)


def test_missing_triton_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sparse_triton, "triton", None)
    monkeypatch.setattr(sparse_triton, "TRITON_IMPORT_ERROR", ImportError("No module named 'triton'"))
    assert not sparse_triton.triton_available("cuda") and not sparse_triton.interpreting()
    assert choose_backend(GATHER_MAX_DENSITY["cuda"], "cuda") == "gather"
    neighbours = build_neighbours(random_index(1, 6, 6, 10), 6, 3)
    with pytest.raises(RuntimeError, match="pip install -c constraints.txt triton"):
        sparse_depthwise_conv(torch.randn(1, 10, 4), torch.randn(4, 3, 3), neighbours, "triton")


def test_auto_picks_triton_only_for_cuda_gather_densities(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sparse_triton, "triton_available", lambda device: True)
    threshold = GATHER_MAX_DENSITY["cuda"]
    assert choose_backend(threshold, "cuda") == "triton"
    assert choose_backend(threshold * 1.01, "cuda") == "dense"
    assert choose_backend(GATHER_MAX_DENSITY["cpu"], "cpu") == "gather"  # CPU unchanged
    monkeypatch.setattr(sparse_triton, "triton_available", lambda device: False)
    assert choose_backend(threshold, "cuda") == "gather"


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kernel_size", [3, 7])
def test_compiled_kernel_matches_the_pytorch_twin_on_cuda(kernel_size: int, dtype: torch.dtype) -> None:
    pytest.importorskip("triton")
    assert sparse_triton.triton_available("cuda") and not sparse_triton.interpreting()
    torch.manual_seed(0)
    height, width, batch, channels = 48, 40, 2, 67
    for density in (1 / 16, 1 / 4):
        num = round(density * height * width)
        index = random_index(batch, height, width, num, seed=kernel_size).cuda()
        neighbours = build_neighbours(index, (height, width), kernel_size)
        x = torch.randn(batch, num, channels, device="cuda")
        weight = torch.randn(channels, kernel_size, kernel_size, device="cuda") / kernel_size
        probe = torch.randn(batch, num, channels, device="cuda")
        results = {}
        for backend, cast in (("triton", dtype), ("gather", dtype), ("reference", torch.float32)):
            # the fp32 reference sees the same (possibly bf16-rounded) numbers
            xb = x.to(dtype).to(cast).requires_grad_()
            wb = weight.to(dtype).to(cast).requires_grad_()
            out = sparse_depthwise_conv(xb, wb, neighbours, "gather" if backend == "reference" else backend)
            assert out.dtype == cast
            (out.float() * probe).sum().backward()
            results[backend] = (out.detach().float(), xb.grad.float(), wb.grad.float())
        for got, twin, reference in zip(*results.values(), strict=True):
            if dtype == torch.float32:
                torch.testing.assert_close(got, twin, rtol=1e-5, atol=1e-5)
            else:  # bf16 inputs, fp32 accumulation: within 1% of the largest magnitude of the fp32 result
                scale = float(reference.abs().max())
                torch.testing.assert_close(got, reference, rtol=0, atol=0.01 * scale)
                torch.testing.assert_close(twin, reference, rtol=0, atol=0.02 * scale)
    assert choose_backend(GATHER_MAX_DENSITY["cuda"], "cuda") == "triton"
    module = SparseDepthwiseConv(channels, kernel_size).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):  # the twin runs in the input's dtype; so does Triton
        fused = module(x.to(dtype), neighbours, backend="triton")
        twin = module(x.to(dtype), neighbours, backend="gather")
    assert fused.dtype == twin.dtype == dtype
    assert "TritonGatherConv" in fused.grad_fn.name() and "TritonGatherConv" not in twin.grad_fn.name()
    scale = float(twin.abs().max().float())
    torch.testing.assert_close(fused, twin, rtol=1e-5, atol=1e-5 if dtype == torch.float32 else 0.02 * scale)
