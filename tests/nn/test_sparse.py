"""Sparse convolution over pixel subsets: both backends against a brute-force loop, conv2d, and each other."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rezdiff.models.infty_diff.sparse import (
    CPU_DEPTHWISE_BLOCK,
    CPU_DEPTHWISE_MAX,
    GATHER_MAX_DENSITY,
    SparseDepthwiseConv,
    build_neighbours,
    choose_backend,
    depthwise_conv2d,
    resize_kernel,
    resized_kernel_size,
    sparse_depthwise_conv,
)
from tests.helpers import CONFIGS, random_index


def brute_force(
    x: torch.Tensor, weight: torch.Tensor, index: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """Python loops over points and offsets: (K²/count) Σ over present in-image neighbours of W ⊙ x."""
    size = weight.shape[-1]
    pad = size // 2
    outputs = []
    for b in range(x.shape[0]):
        where = {int(p): n for n, p in enumerate(index[b])}
        rows = []
        for n in range(x.shape[1]):
            r, c = divmod(int(index[b, n]), width)
            total, count = 0, 0
            for u in range(size):
                for v in range(size):
                    rr, cc = r + u - pad, c + v - pad
                    m = where.get(rr * width + cc) if 0 <= rr < height and 0 <= cc < width else None
                    if m is None:
                        continue
                    count += 1
                    tap = weight[..., u, v]
                    total = total + (tap * x[b, m] if weight.ndim == 3 else tap @ x[b, m])
            rows.append(total * size**2 / count)
        outputs.append(torch.stack(rows))
    return torch.stack(outputs)


@pytest.mark.parametrize("depthwise", [True, False])
@pytest.mark.parametrize("backend", ["gather", "dense"])
def test_matches_brute_force_forward_and_backward(backend: str, depthwise: bool) -> None:
    torch.manual_seed(0)
    height, width, channels, size = 6, 7, 3, 3
    index = random_index(2, height, width, 17)
    x = torch.randn(2, 17, channels, dtype=torch.float64, requires_grad=True)
    shape = (channels, size, size) if depthwise else (4, channels, size, size)
    weight = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    neighbours = build_neighbours(index, (height, width), size)
    out = sparse_depthwise_conv(x, weight, neighbours, backend)
    ref = brute_force(x, weight, index, height, width)
    torch.testing.assert_close(out, ref)
    probe = torch.randn_like(ref)
    grads = torch.autograd.grad((out * probe).sum(), (x, weight))
    ref_grads = torch.autograd.grad((ref * probe).sum(), (x, weight))
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("depthwise", [True, False])
def test_gather_function_gradcheck(depthwise: bool) -> None:
    torch.manual_seed(1)
    index = random_index(2, 4, 5, 9, seed=3)
    neighbours = build_neighbours(index, (4, 5), 3)
    x = torch.randn(2, 9, 2, dtype=torch.float64, requires_grad=True)
    weight = torch.randn((2, 3, 3) if depthwise else (2, 2, 3, 3), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, w: sparse_depthwise_conv(a, w, neighbours, "gather"), (x, weight)
    )


def test_neighbour_relation_is_symmetric_with_absent_and_border() -> None:
    """The gather backward relies on: table[n, k] = m  <=>  table[m, K²-1-k] = n (absent both ways)."""
    index = random_index(3, 9, 8, 20, seed=5)
    neighbours = build_neighbours(index, (9, 8), 5)
    table, num, taps = neighbours.table, 20, 25
    for b in range(3):
        for n in range(num):
            for k in range(taps):
                m = int(table[b, n, k])
                if m != num:
                    assert int(table[b, m, taps - 1 - k]) == n
    torch.testing.assert_close(neighbours.counts, (table != num).sum(-1).to(neighbours.counts.dtype))
    assert bool((table[:, :, taps // 2] == torch.arange(num)).all())  # the centre tap is the point itself


@pytest.mark.parametrize("density", [1 / 16, 1 / 4, 1.0])
@pytest.mark.parametrize("depthwise", [True, False])
def test_backends_agree(density: float, depthwise: bool) -> None:
    torch.manual_seed(2)
    height, width, channels = 16, 12, 6
    num = int(density * height * width)
    index = random_index(2, height, width, num, seed=7)
    neighbours = build_neighbours(index, (height, width), 7)
    x = torch.randn(2, num, channels)
    weight = torch.randn((channels, 7, 7) if depthwise else (5, channels, 7, 7)) / 7
    probe = torch.randn(2, num, channels if depthwise else 5)
    results = []
    for backend in ("gather", "dense"):
        xb, wb = x.clone().requires_grad_(), weight.clone().requires_grad_()
        out = sparse_depthwise_conv(xb, wb, neighbours, backend)
        (out * probe).sum().backward()
        results.append((out, xb.grad, wb.grad))
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", ["gather", "dense"])
def test_full_density_is_conv2d_times_k2_over_count(backend: str) -> None:
    torch.manual_seed(3)
    height, width, channels, size = 10, 13, 4, 5
    image = torch.randn(2, channels, height, width, dtype=torch.float64)
    weight = torch.randn(channels, size, size, dtype=torch.float64)
    index = torch.arange(height * width).expand(2, -1)
    x = image.flatten(2).transpose(1, 2)  # row-major points
    out = sparse_depthwise_conv(x, weight, build_neighbours(index, (height, width), size), backend)
    conv = F.conv2d(image, weight.unsqueeze(1), padding=size // 2, groups=channels)
    count = F.conv2d(
        torch.ones(1, 1, height, width, dtype=torch.float64),
        torch.ones(1, 1, size, size, dtype=torch.float64),
        padding=2,
    )
    expected = (conv * size**2 / count).flatten(2).transpose(1, 2)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("size", [3, 9, 11, 13, 21])
@pytest.mark.parametrize("block", [None, 4, 7, 9])
def test_blocked_depthwise_conv_is_conv2d_forward_and_backward(size: int, block: int | None) -> None:
    """The kernel split into blocks (the CPU's way past 9x9) is the one conv2d: values and both gradients,
    in float64, for blocks that divide the kernel, leave a remainder, or exceed it; rectangular images."""
    torch.manual_seed(4)
    image = torch.randn(2, 3, 17, 12, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 1, size, size, dtype=torch.float64, requires_grad=True)
    probe = torch.randn(2, 3, 17, 12, dtype=torch.float64)
    results = []
    for fn in (
        lambda: F.conv2d(image, weight, padding=size // 2, groups=3),
        lambda: depthwise_conv2d(image, weight, block),
    ):
        out = fn()
        grads = torch.autograd.grad((out * probe).sum(), (image, weight))
        results.append((out, *grads))
    for got, want in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_cpu_splits_only_kernels_past_the_measured_cliff(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the CPU a kernel up to CPU_DEPTHWISE_MAX is one conv2d, a wider one ceil(K / block)² blocks; the
    dense backend of the sparse operator goes through it (a resized kernel at 2x sampling is 13 wide)."""
    calls: list[tuple[int, ...]] = []
    conv2d = F.conv2d
    monkeypatch.setattr(
        "rezdiff.models.infty_diff.sparse.F.conv2d",
        lambda x, w, *a, **k: calls.append(tuple(w.shape[-2:])) or conv2d(x, w, *a, **k),
    )
    image = torch.randn(1, 2, 20, 20)
    depthwise_conv2d(image, torch.randn(2, 1, CPU_DEPTHWISE_MAX, CPU_DEPTHWISE_MAX))
    assert calls == [(CPU_DEPTHWISE_MAX, CPU_DEPTHWISE_MAX)]
    calls.clear()
    size = 13
    blocks = -(-size // CPU_DEPTHWISE_BLOCK)
    index = torch.arange(400).expand(1, -1)
    sparse_depthwise_conv(
        image.flatten(2).transpose(1, 2),
        torch.randn(2, size, size),
        build_neighbours(index, (20, 20), size),
        "dense",
    )
    assert len(calls) == blocks**2 and max(max(c) for c in calls) == CPU_DEPTHWISE_BLOCK


def test_resized_kernel_size_rule() -> None:
    # The authors' 2 * round((K * scale - 1) / 2) + 1, Python's round (half to even): ties go to 1 mod 4.
    assert resized_kernel_size(7, 1.0) == 7
    assert resized_kernel_size(7, 2.0) == 13  # 14: tie between 13 and 15, round(6.5) = 6
    assert resized_kernel_size(7, 15 / 7) == 15
    assert resized_kernel_size(7, 4.0) == 29  # 28: tie, round(13.5) = 14
    assert resized_kernel_size(7, 8.0) == 57  # 56: tie, round(27.5) = 28
    assert resized_kernel_size(5, 4.0) == 21  # 20: tie, round(9.5) = 10 (the quickstart's 4x kernels)
    assert resized_kernel_size(7, 1.3) == 9  # 9.1
    assert resized_kernel_size(7, 0.5) == 3  # 3.5: tie, round(1.25) = 1
    assert resized_kernel_size(7, 0.25) == 3  # at least 3
    assert resized_kernel_size(5, 1.5) == 7  # 7.5: tie, round(3.25) = 3
    with pytest.raises(ValueError, match="positive"):
        resized_kernel_size(7, 0.0)


@pytest.mark.parametrize("name", ["infty_diff.yaml", "infty_diff_ae.yaml"])
def test_quickstart_comment_names_the_kernel_size_it_gets(name: str) -> None:
    """The quickstarts' 4x sample grid says "kernels of 21x21 on 128x128": true for their kernel and R0."""
    import re

    import yaml

    text = (CONFIGS / "quickstart" / name).read_text()
    model = yaml.safe_load(text)["model"]["init_args"]
    size, resolution = map(int, re.search(r"kernels of (\d+)x\d+ on (\d+)x\d+", text).groups())
    assert resized_kernel_size(model["kernel_size"], resolution / model["train_resolution"]) == size == 21


def test_resize_at_scale_one_is_identity_and_box_stays_box() -> None:
    weight = torch.randn(3, 7, 7)
    assert resize_kernel(weight, 7) is weight
    box = torch.full((2, 7, 7), 1 / 49)
    torch.testing.assert_close(resize_kernel(box, 13), torch.full((2, 13, 13), 1 / 49 * (7 / 13) ** 2))


def test_resize_keeps_a_smooth_kernel_mass() -> None:
    grid = torch.linspace(-1, 1, 7)
    kernel = torch.exp(-(grid[:, None] ** 2 + grid[None, :] ** 2) / 0.8).unsqueeze(0)
    for size in (13, 15, 21):
        assert abs(float(resize_kernel(kernel, size).sum() / kernel.sum()) - 1) < 0.06


@pytest.mark.parametrize("scale", [0.5, 1.0, 1.5, 2.0])
@pytest.mark.parametrize("density", [0.2, 1.0])
def test_constant_field_stays_constant_under_resized_box_kernel(scale: float, density: float) -> None:
    """A box kernel averages: the Monte-Carlo estimate of a constant is exact at any density, at the border
    too (count normalisation), and with the resized kernel (which keeps the operator's mass)."""
    height, width, channels = 20, 18, 2
    num = int(density * height * width)
    conv = SparseDepthwiseConv(channels, kernel_size=7)
    with torch.no_grad():
        conv.weight.fill_(1 / 49)
    index = random_index(1, height, width, num, seed=11)
    neighbours = build_neighbours(index, (height, width), conv.kernel_size_for(scale))
    x = torch.full((1, num, channels), 0.7)
    for backend in ("gather", "dense"):
        out = conv(x, neighbours, scale=scale, backend=backend)
        torch.testing.assert_close(out, x)


def test_module_checks_kernel_size_against_neighbours() -> None:
    conv = SparseDepthwiseConv(4, kernel_size=7)
    index = random_index(1, 8, 8, 20)
    x = torch.randn(1, 20, 4)
    with pytest.raises(ValueError, match="kernel_size=7"):
        conv(x, build_neighbours(index, 8, 7), scale=2.0)
    assert conv(x, build_neighbours(index, 8, conv.kernel_size_for(2.0)), scale=2.0).shape == (1, 20, 4)


def test_auto_picks_by_density_and_device_and_can_be_overridden() -> None:
    cpu = GATHER_MAX_DENSITY["cpu"]
    assert choose_backend(cpu, "cpu") == "gather"
    assert choose_backend(cpu * 1.01, "cpu") == "dense"
    assert choose_backend(1.0, "cpu") == "dense" and choose_backend(1.0, "cuda") == "dense"
    assert choose_backend(GATHER_MAX_DENSITY["cuda"], "cuda") in ("gather", "triton")  # triton: if installed
    x = torch.randn(1, 8, 3, requires_grad=True)
    weight = torch.randn(3, 3, 3)
    sparse = build_neighbours(random_index(1, 32, 32, 8), 32, 3)  # density 1/128
    dense = build_neighbours(torch.arange(64)[None], 8, 3)
    assert "GatherConv" in sparse_depthwise_conv(x, weight, sparse).grad_fn.name()
    assert "GatherConv" not in sparse_depthwise_conv(x, weight, sparse, "dense").grad_fn.name()
    x_full = torch.randn(1, 64, 3, requires_grad=True)
    assert "GatherConv" not in sparse_depthwise_conv(x_full, weight, dense).grad_fn.name()
    module = SparseDepthwiseConv(3, 3, backend="gather")
    assert "GatherConv" in module(x_full, dense).grad_fn.name()
    assert "GatherConv" not in module(x_full, dense, backend="dense").grad_fn.name()


def test_clear_errors() -> None:
    index = random_index(2, 6, 6, 10)
    neighbours = build_neighbours(index, 6, 3)
    weight = torch.randn(4, 3, 3)
    with pytest.raises(ValueError, match=r"\[B, N, C\]"):
        sparse_depthwise_conv(torch.randn(20, 4), weight, neighbours)
    with pytest.raises(ValueError, match="neighbours are for"):
        sparse_depthwise_conv(torch.randn(2, 9, 4), weight, neighbours)
    with pytest.raises(ValueError, match="channels"):
        sparse_depthwise_conv(torch.randn(2, 10, 5), weight, neighbours)
    with pytest.raises(ValueError, match="kernel_size=3"):
        sparse_depthwise_conv(torch.randn(2, 10, 4), torch.randn(4, 5, 5), neighbours)
    with pytest.raises(ValueError, match="weight must be"):
        sparse_depthwise_conv(torch.randn(2, 10, 4), torch.randn(4, 9), neighbours)
    with pytest.raises(ValueError, match="backend"):
        sparse_depthwise_conv(torch.randn(2, 10, 4), weight, neighbours, "sparse")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="odd"):
        build_neighbours(index, 6, 4)
    with pytest.raises(ValueError, match="same pixel twice"):
        build_neighbours(torch.tensor([[1, 2, 1]]), 6, 3)
    with pytest.raises(ValueError, match="outside"):
        build_neighbours(torch.tensor([[1, 36]]), 6, 3)
    with pytest.raises(ValueError, match="integer"):
        build_neighbours(torch.tensor([[1.0, 2.0]]), 6, 3)
    with pytest.raises(ValueError, match="odd"):
        SparseDepthwiseConv(4, kernel_size=6)


def test_benchmark_script_records_a_complete_result(tmp_path: Path) -> None:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "sparse_conv.py"
    spec = importlib.util.spec_from_file_location("sparse_conv_benchmark", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    args = ["--resolutions", "16", "--densities", "0.25", "1", "--batch", "1", "--channels", "4"]
    report = script.main(
        [*args, "--repeats", "1", "--warmup", "0", "--device", "cpu", "--out", str(tmp_path)]
    )
    assert json.loads((tmp_path / "sparse_conv_cpu.json").read_text()) == report
    assert report["versions"]["torch"] and report["auto_threshold_in_code"] == GATHER_MAX_DENSITY["cpu"]
    assert [row["density"] for row in report["rows"]] == [0.25, 1.0]
    assert all(row["gather_s"] > 0 and row["dense_over_gather"] > 0 for row in report["rows"])
