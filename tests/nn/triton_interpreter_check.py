"""Run the sparse convolution's Triton kernels in Triton's interpreter on CPU and compare them with the twins.

    TRITON_INTERPRET=1 python tests/nn/triton_interpreter_check.py     # prints one JSON object per check

Triton chooses between compiling and interpreting when a kernel is decorated, so the variable must be set
before ``rezdiff.models.infty_diff.sparse_triton`` is first imported: ``tests/nn/test_sparse_triton.py`` runs
this file in a fresh process, leaving the rest of the suite on the compiled path. The tiles are shrunk
(8 channels x 16 points) so that odd channel counts and point counts cover several partly masked tiles at
interpreter speed; one case keeps the production tiles. Exit status 1 if any check fails.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import torch

Checks = list[dict[str, Any]]
NAMES = ("out", "grad_x", "grad_w")


def random_index(batch: int, height: int, width: int, num: int, seed: int) -> torch.Tensor:
    """Distinct random pixels per example, always including the four corners (absent neighbours there)."""
    generator = torch.Generator().manual_seed(seed)
    corners = torch.tensor([0, width - 1, (height - 1) * width, height * width - 1])
    rows = []
    for _ in range(batch):
        rest = torch.randperm(height * width, generator=generator)
        rest = rest[~torch.isin(rest, corners)][: num - 4]
        rows.append(torch.cat((corners, rest))[torch.randperm(num, generator=generator)])
    return torch.stack(rows)


def run(
    backend: str, x: torch.Tensor, weight: torch.Tensor, neighbours: Any, probe: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    from rezdiff.models.infty_diff.sparse import sparse_depthwise_conv

    xb, wb = x.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    out = sparse_depthwise_conv(xb, wb, neighbours, backend)  # type: ignore[arg-type]
    grad_x, grad_w = torch.autograd.grad((out * probe).sum(), (xb, wb))
    return out.detach(), grad_x, grad_w


def max_errors(got: tuple[torch.Tensor, ...], want: tuple[torch.Tensor, ...]) -> dict[str, float]:
    return {
        name: float((a.double() - b.double()).abs().max())
        for name, a, b in zip(NAMES[: len(got)], got, want, strict=True)
    }


def compare(
    got: tuple[torch.Tensor, ...],
    want: tuple[torch.Tensor, ...],
    rtol: float,
    atol: float,
    relative: bool = False,
) -> str:
    """Empty when every tensor matches (dtype, shape and values), else the first mismatch.

    ``relative``: ``atol`` is a fraction of each reference tensor's largest magnitude.
    """
    for name, a, b in zip(NAMES[: len(got)], got, want, strict=True):
        try:
            scale = float(b.abs().max()) if relative else 1.0
            torch.testing.assert_close(a, b, rtol=rtol, atol=atol * scale)
        except AssertionError as error:
            return f"{name}: {error}"
    return ""


def case(
    kernel_size: int, density: float, channels: int, dtype: torch.dtype = torch.float32, seed: int = 0
) -> Checks:
    """Triton vs the gather twin (tight) and the dense backend, forward and both gradients, 2 images."""
    from rezdiff.models.infty_diff.sparse import build_neighbours

    height, width, batch = 12, 16, 2
    num = round(density * height * width)
    torch.manual_seed(seed)
    index = random_index(batch, height, width, num, seed)
    neighbours = build_neighbours(index, (height, width), kernel_size)
    missing = int((neighbours.counts < kernel_size**2).sum())
    x = torch.randn(batch, num, channels, dtype=dtype)
    weight = (torch.randn(channels, kernel_size, kernel_size) / kernel_size).to(dtype)
    probe = torch.randn(batch, num, channels, dtype=dtype)
    start = time.perf_counter()
    triton_result = run("triton", x, weight, neighbours, probe)
    seconds = time.perf_counter() - start
    name = f"K={kernel_size} density={density:g} C={channels} {str(dtype).removeprefix('torch.')}"
    checks: Checks = []
    if dtype == torch.bfloat16:
        # The twin sums in bf16; compare both with fp32 runs of the same (bf16-valued) numbers instead.
        # Errors up to 1% of each tensor's largest magnitude: bf16 keeps 8 bits, and the factor K²/count is
        # itself rounded to bf16 by sparse_depthwise_conv.
        reference = run("gather", x.float(), weight.float(), neighbours, probe.float())
        for label, result in (
            ("triton", triton_result),
            ("gather", run("gather", x, weight, neighbours, probe)),
        ):
            failure = compare(tuple(t.float() for t in result), reference, rtol=0.0, atol=0.01, relative=True)
            checks.append(
                dict(
                    check=f"{name}: {label} vs fp32 gather",
                    ok=not failure and all(t.dtype == torch.bfloat16 for t in result),
                    failure=failure,
                    max_error=max_errors(result, reference),
                    max_reference={n: float(t.abs().max()) for n, t in zip(NAMES, reference, strict=True)},
                )
            )
        return checks
    tight = 1e-12 if dtype == torch.float64 else 1e-5
    for other, tolerance in (("gather", tight), ("dense", max(tight, 1e-4))):
        want = run(other, x, weight, neighbours, probe)
        failure = compare(triton_result, want, rtol=tolerance, atol=tolerance)
        checks.append(
            dict(
                check=f"{name}: triton vs {other}",
                ok=not failure and missing > 0,
                failure=failure or ("" if missing else "no point with a missing neighbour"),
                max_error=max_errors(triton_result, want),
                points_missing_neighbours=missing,
                points=batch * num,
                triton_seconds=seconds,
            )
        )
    return checks


def routing() -> Checks:
    """Regular weights go to the PyTorch loop; "auto" on CPU is unchanged; autocast dtypes match the twin."""
    from rezdiff.models.infty_diff.sparse import (
        SparseDepthwiseConv,
        build_neighbours,
        choose_backend,
        sparse_depthwise_conv,
    )

    index = random_index(1, 8, 8, 16, seed=1)
    neighbours = build_neighbours(index, 8, 3)
    x = torch.randn(1, 16, 5)
    weight = torch.randn(4, 5, 3, 3)
    regular = sparse_depthwise_conv(x, weight, neighbours, "triton")
    checks: Checks = [
        dict(
            check="regular weight under 'triton' runs the gather loop",
            ok=torch.equal(regular, sparse_depthwise_conv(x, weight, neighbours, "gather")),
        ),
        dict(
            check="'auto' on CPU keeps gather/dense",
            ok=choose_backend(1 / 16, "cpu") == "gather" and choose_backend(1.0, "cpu") == "dense",
        ),
    ]
    conv = SparseDepthwiseConv(5, kernel_size=3)
    for dtype in (torch.float32, torch.bfloat16):
        inputs = x.to(dtype)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = conv(inputs, neighbours, backend="triton")
            want = conv(inputs, neighbours, backend="gather")
        checks.append(
            dict(
                check=f"autocast, {dtype} input: same dtype as the twin",
                ok=got.dtype == want.dtype == dtype and not compare((got,), (want,), rtol=0.02, atol=0.02),
                dtype=str(got.dtype),
            )
        )
    return checks


def main() -> int:
    if os.environ.get("TRITON_INTERPRET") != "1":
        print("set TRITON_INTERPRET=1 (before Python starts) to run this check", file=sys.stderr)
        return 2
    from rezdiff.models.infty_diff import sparse_triton

    assert sparse_triton.interpreting(), "the kernels were not decorated in interpreter mode"
    start = time.perf_counter()
    # Production tiles (64 channels x 32 points) on one case, then small tiles for the rest.
    checks = case(3, 1 / 4, 67, seed=5)
    sparse_triton._MAX_BLOCK_C, sparse_triton._TILE_ELEMENTS = 8, 128
    sparse_triton._WEIGHT_GRAD_PROGRAMS = 300  # several splits of the points per program column
    for kernel_size in (3, 7):
        for density in (1 / 16, 1 / 4):
            checks += case(kernel_size, density, 13, seed=kernel_size)
    checks += case(3, 1 / 4, 13, dtype=torch.float64, seed=2)
    checks += case(7, 1 / 4, 13, dtype=torch.bfloat16, seed=3)
    checks += routing()
    for check in checks:
        print(json.dumps(check))
    print(json.dumps({"check": "total", "ok": True, "seconds": time.perf_counter() - start}))
    return 0 if all(check["ok"] for check in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
