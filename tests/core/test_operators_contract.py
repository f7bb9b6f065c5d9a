"""``core/operators.py`` beyond its maths (``test_operators.py``): the precision and device rules of the DCT
and spectral multiply (compute in float32 or float64 with autocast off, return the input's dtype, build
every index and table on the input's device), the refusals of ``laplacian_eigenvalues`` word for word, and
the old names that read through to their new modules.

On a CPU-only machine a table left on the CPU or a kernel run under autocast changes no number, so those
rules are checked on the calls that make them (the recorded arguments), as a GPU run would break on them.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from scipy.fft import dctn, idctn

from rezdiff.core import operators
from rezdiff.core.operators import dct2, dct_pixel_variance, idct2, laplacian_eigenvalues, spectral_multiply
from tests.helpers import record_calls, to_recorder


def test_half_precision_inputs_are_transformed_in_float32_and_keep_their_dtype(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x = torch.randn(2, 6, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    computed = record_calls(monkeypatch, operators, "_dct2")
    inverted = record_calls(monkeypatch, operators, "_idct2")
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        y = x.to(dtype)
        forward, backward = dct2(y), idct2(y)
        assert forward.dtype == backward.dtype == dtype
        tol = {"rtol": 0, "atol": 2e-2 if dtype != torch.float32 else 1e-5}
        torch.testing.assert_close(
            forward.double(), torch.from_numpy(dctn(y.double().numpy(), axes=(-2, -1), norm="ortho")), **tol
        )
        torch.testing.assert_close(
            backward.double(), torch.from_numpy(idctn(y.double().numpy(), axes=(-2, -1), norm="ortho")), **tol
        )
    assert [args[0].dtype for args, _ in computed] == [torch.float32] * 3
    assert [args[0].dtype for args, _ in inverted] == [torch.float32] * 3
    assert dct2(x).dtype == torch.float64 and computed[-1][0][0].dtype == torch.float64


def test_transforms_run_with_autocast_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """cuFFT under a float16 autocast would lose precision (and refuse sizes that are not powers of two)."""
    made = record_calls(monkeypatch, torch, "autocast")
    x = torch.randn(1, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        dct2(x), idct2(x), spectral_multiply(x, torch.ones(4, 4), "reflect")
    inner = made[1:]  # the first call is this test's own
    assert inner and all(kwargs.get("enabled") is False for _, kwargs in inner)


def test_index_tables_and_multipliers_are_made_on_the_inputs_device(monkeypatch: pytest.MonkeyPatch) -> None:
    aranges = record_calls(monkeypatch, torch, "arange")
    x = torch.randn(1, 4, 6, generator=torch.Generator().manual_seed(2))
    idct2(dct2(x))
    assert aranges and all(kwargs.get("device") == x.device for _, kwargs in aranges)

    moved: list[tuple] = []
    multiplier = torch.rand(4, 6, dtype=torch.float64).as_subclass(to_recorder(moved, keep=True))
    for boundary in ("periodic", "reflect"):
        moved.clear()
        spectral_multiply(x, multiplier, boundary)
        out = spectral_multiply(x, multiplier, boundary)
        assert (x.device,) in moved and (None,) not in moved, moved
        assert out.dtype == x.dtype


def test_pixel_variance_takes_a_multiplier_of_any_float_dtype() -> None:
    m = torch.rand(3, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    expected = dct_pixel_variance(m)
    assert expected.dtype == torch.float64 and expected.shape == (3, 5)
    torch.testing.assert_close(dct_pixel_variance(m.float()), expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    "args, message",
    [
        ((4, 4, "neumann"), r"^unknown boundary 'neumann'; expected one of \('periodic', 'reflect'\)$"),
        (
            (4, 4, "periodic", "nine_point"),
            r"^unknown laplacian 'nine_point'; expected one of \('five_point', 'spectral'\)$",
        ),
        ((0, 4), r"^grid size must be positive, got 0x4$"),
        ((4, 0), r"^grid size must be positive, got 4x0$"),
    ],
)
def test_laplacian_eigenvalues_refusals(args, message) -> None:
    with pytest.raises(ValueError, match=message):
        laplacian_eigenvalues(*args)


def test_spectral_multiply_refuses_an_unknown_boundary() -> None:
    """Both bases are taken by name: a misspelt boundary must not fall through to the cosine basis."""
    for boundary in ("REFLECT", "neumann", None):
        with pytest.raises(ValueError, match=rf"^unknown boundary {boundary!r}; expected one of"):
            spectral_multiply(torch.zeros(2, 2), torch.ones(2, 2), boundary)  # type: ignore[arg-type]


def test_the_smallest_grid_has_the_constant_mode_only() -> None:
    for boundary in ("periodic", "reflect"):
        assert laplacian_eigenvalues(1, 1, boundary).tolist() == [[0.0]]
        assert laplacian_eigenvalues(1, 3, boundary).shape == (1, 3)


@pytest.mark.parametrize(
    "name, new",
    [
        ("Matern", "rezdiff.models.multilevel.priors"),
        ("GaussianMollifier", "rezdiff.models.infty_diff.mollifier"),
    ],
)
def test_a_moved_name_reads_through_with_one_warning_naming_both_paths(name: str, new: str) -> None:
    import importlib

    expected = getattr(importlib.import_module(new), name)
    operators.__dict__.pop(name, None)
    try:
        with pytest.warns(
            FutureWarning, match=rf"^rezdiff\.core\.operators\.{name} moved to {new}\.{name}; "
        ):
            assert getattr(operators, name) is expected
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert getattr(operators, name) is expected  # kept in the module: no second warning
    finally:
        operators.__dict__.pop(name, None)
    with pytest.raises(
        AttributeError, match=r"^module 'rezdiff\.core\.operators' has no attribute 'Nothing'$"
    ):
        operators.Nothing  # noqa: B018
