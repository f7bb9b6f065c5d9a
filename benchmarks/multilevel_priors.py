"""The figures of the multilevel README's "Deviations in the priors and levels" table, recomputed.

    python benchmarks/multilevel_priors.py --out benchmarks/results

Noise figures come from the priors' exact spectra (``rezdiff.models.multilevel.priors``, no sampling
error); the authors' operators are the library's classes in their documented mapping (their ``s Q`` on an
``n x n`` grid is rezdiff's prior with ``scale = s / n``: ``ImplicitConv(s)`` = ``InverseLaplacian(0.55,
s / n, "drop", "five_point")``, ``BesselConv(tau)`` = ``Matern(tau, 0.55, 1 / n, "five_point")``,
``FNOprior(k1, k2)`` = ``AuthorsFNOPrior(k1, k2, scale=1 / n)``, ``CombinedConv`` = ``CombinedCovariance``
of the first and third; ``CombinedConv`` and ``FNOprior`` are tested against dense matrices of their code
and the 5-point priors against the stencil's matrix functions in ``tests/core/test_operators.py``),
except the even grid's Nyquist row of their ``FNOprior``, which rezdiff drops and which is therefore
measured with their spectral convolution written out below. Data: scikit-learn's digits
(``Bundled("digits")``, values in [-1, 1]) rendered bicubically at each grid; "theirs" uses the digits in
[0, 1] at 64² and their ortho-FFT crop to 32²; the quickstart's LFW faces (``Bundled("lfw")``, grey,
rendered at 32²) and grey ``Synthetic`` shapes at 64² for the level resizing (``rezdiff.data.
fourier_resize``; 64 images). Standard deviations are over all pixels of all images. About 10 s on one
CPU thread.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).parent))
from common import add_device_options, select_device, write_rows  # noqa: E402

from rezdiff.data import Bundled, Synthetic, fourier_resize  # noqa: E402
from rezdiff.models.multilevel.priors import (  # noqa: E402
    AuthorsFNOPrior,
    CombinedCovariance,
    Covariance,
    FNOPrior,
    InverseLaplacian,
    Matern,
    SumCovariance,
)

WARMSTART_GRID = 64
"""The grid of the authors' warm-start experiment (``main_warmstart.py``) and of the rezdiff config."""


def std(prior: Covariance, n: int) -> float:
    """Per-pixel standard deviation of the prior's samples on an ``n x n`` grid."""
    return prior.pixel_variance(n, n) ** 0.5


def warmstart_prior(laplacian: str = "spectral", scale: float = 2.0 / WARMSTART_GRID) -> CombinedCovariance:
    """``configs/multilevel_warmstart.yaml``'s prior: the authors' ``CombinedConv(10, 10, 10, 0.5)`` with
    their scales times ``scale`` (the config: 2/64; their own noise at 64²: 1/64)."""
    return CombinedCovariance(
        (
            InverseLaplacian(0.55, 10.0 * scale, "drop", laplacian),  # type: ignore[arg-type]
            AuthorsFNOPrior(10, 10, seed=0, scale=0.5 * scale),
        )
    )


def digits(n: int, limit: int | None = None) -> Tensor:
    """scikit-learn's digits rendered bicubically at ``n x n``, ``[N, n, n]`` in [-1, 1]."""
    data = Bundled("digits", channels=1)
    count = len(data) if limit is None else min(limit, len(data))
    return torch.stack([data.render(i, n)[0] for i in range(count)]).double()


def ortho_crop(x: Tensor, n: int) -> Tensor:
    """The authors' data levels: keep the wave numbers ``|k| < n / 2`` of an ortho-normalised FFT and
    invert it on the ``n``-grid with the same normalisation (values scale by ``N / n``)."""
    size = x.shape[-1]
    spectrum = torch.fft.fftshift(torch.fft.fft2(x, norm="ortho"), dim=(-2, -1))
    lo = size // 2 - n // 2
    kept = spectrum[..., lo : lo + n, lo : lo + n]
    return torch.fft.ifft2(torch.fft.ifftshift(kept, dim=(-2, -1)), norm="ortho").real


def authors_fno_trace(prior: AuthorsFNOPrior, n: int) -> float:
    """``trace(K K^T) / n^2`` of the authors' ``SpectralConv2d(1, 1, k1, k2)`` (``irfft2`` of ``rfft2(x)``
    times ``weights1`` on rows ``:k1``, ``weights2`` on rows ``-k1:``), with rezdiff's weights, times
    ``(scale n)^2``: the per-pixel variance their noise would have in rezdiff's value convention."""
    weights1, weights2 = prior.weights()
    m1, m2 = prior.modes1, prior.modes2
    basis = torch.eye(n * n, dtype=torch.float64).reshape(n * n, n, n)
    spectrum = torch.fft.rfft2(basis)
    out = torch.zeros_like(spectrum)
    out[:, :m1, :m2] = spectrum[:, :m1, :m2] * weights1
    out[:, -m1:, :m2] = spectrum[:, -m1:, :m2] * weights2
    columns = torch.fft.irfft2(out, s=(n, n))
    return float(columns.square().sum()) / n**2 * (prior.scale * n) ** 2


def band_excess(prior: Covariance, coarse: int, fine: int) -> tuple[float, float]:
    """A coarse grid's law against the fine grid's on the modes the coarse grid holds in full
    (``|k| < coarse / 2``): the largest variance ratio of one mode and the ratio of the band's totals."""
    k = torch.fft.fftfreq(coarse, 1.0 / coarse).long()
    keep = (2 * k.abs() < coarse)[:, None] & (2 * k.abs() < coarse)[None, :]
    rows = k % fine
    coarse_spectrum = prior.spectrum(coarse, coarse)[keep]
    fine_spectrum = prior.spectrum(fine, fine)[rows[:, None], rows[None, :]][keep]
    positive = fine_spectrum > 0
    ratio = coarse_spectrum[positive] / fine_spectrum[positive]
    return float(ratio.max()), float(coarse_spectrum.sum() / fine_spectrum.sum())


def resize_difference(images: Tensor, coarse: int) -> dict[str, float]:
    """Periodic against cosine Fourier downsampling of ``images`` to ``coarse``: RMS and largest absolute
    difference, and the data's standard deviation at the fine size."""
    difference = fourier_resize(images, coarse, "periodic") - fourier_resize(images, coarse, "reflect")
    return {
        "rms": float(difference.square().mean().sqrt()),
        "max": float(difference.abs().max()),
        "data_std": float(images.std()),
    }


def compute(grids: tuple[int, ...] = (32, 64, 128), limit: int | None = None) -> list[dict[str, Any]]:
    """Every figure as a row ``{"figure", "grid", "value"}`` (module docstring); ``limit`` caps the images
    per data set (tests)."""
    rows: list[dict[str, Any]] = []

    def add(figure: str, value: float, grid: str | int = "") -> None:
        rows.append({"figure": figure, "grid": str(grid), "value": value})

    fine = WARMSTART_GRID
    rendered = {n: digits(n, limit) for n in {*grids, fine, 32}}  # each grid's digits, rendered once
    data_std = {n: float(rendered[n].std()) for n in grids}
    for n in grids:
        add("digits data std in [-1, 1]", data_std[n], n)

    # noise amplitude: rezdiff's default Matern(8) on digits
    for n in grids:
        add("Matern(8) noise-to-data ratio on digits", std(Matern(), n) / data_std[n], n)
    # the authors' warm-start prior in their convention: data in [0, 1], 64² and their ortho crop to 32²
    theirs = rendered[fine] / 2 + 0.5
    their_data = {fine: float(theirs.std()), fine // 2: float(ortho_crop(theirs, fine // 2).std())}
    for n, value in their_data.items():
        noise = std(warmstart_prior("five_point", 1.0 / n), n)
        add("theirs: data std (digits in [0, 1], ortho-FFT crop below 64²)", value, n)
        add("theirs: warm-start CombinedConv noise std", noise, n)
        add("theirs: warm-start noise-to-data ratio", noise / value, n)
    add(
        "their warm-start numbers in rezdiff's convention: noise std",
        std(warmstart_prior("five_point", 1.0), fine),
        fine,
    )
    data32 = float((rendered[32] / 2 + 0.5).std())
    add("theirs: data std (digits in [0, 1])", data32, 32)
    for name, prior in [
        ("ImplicitConv(20)", InverseLaplacian(0.55, 20.0 / 32, "drop", "five_point")),
        ("BesselConv(8)", Matern(8.0, 0.55, 1.0 / 32, "five_point")),
    ]:
        add(f"theirs: main.py {name} noise std", std(prior, 32), 32)
        add(f"theirs: main.py {name} noise-to-data ratio", std(prior, 32) / data32, 32)

    # FNO priors: mode counts and the Nyquist row rezdiff drops
    authors_fno = AuthorsFNOPrior(32, 16, scale=1.0 / fine)
    add("AuthorsFNOPrior(32, 16) modes held", float((authors_fno.sqrt_spectrum(fine, fine) > 0).sum()), fine)
    add("FNOPrior(14) modes held", float((FNOPrior(14).sqrt_spectrum(fine, fine) > 0).sum()), fine)
    their_trace = authors_fno_trace(authors_fno, fine)
    add(
        "share of their FNOprior(32, 16) trace on the Nyquist row (dropped)",
        1.0 - authors_fno.pixel_variance(fine, fine) / their_trace,
        fine,
    )

    # combined (one draw) vs sum (independent draws) of the warm-start parts
    combined = warmstart_prior()
    summed = SumCovariance(combined.parts)
    add("warm-start prior noise std: CombinedCovariance", std(combined, fine), fine)
    add("warm-start prior noise std: SumCovariance of the same parts", std(summed, fine), fine)
    k = torch.fft.fftfreq(fine, 1.0 / fine)
    low = (k.abs() <= 1)[:, None] & (k.abs() <= 1)[None, :]
    low[0, 0] = False  # the dropped constant mode
    ratio = (combined.spectrum(fine, fine) / summed.spectrum(fine, fine))[low]
    add("combined / sum eigenvalue on the 8 modes |k1|, |k2| <= 1 but (0, 0): min", float(ratio.min()), fine)
    add("combined / sum eigenvalue on the 8 modes |k1|, |k2| <= 1 but (0, 0): max", float(ratio.max()), fine)

    # the warm-start config's prior on digits, and what the 5-point stencil would do to its 32² level
    for n in grids:
        add("warm-start prior noise std", std(combined, n), n)
        add("warm-start prior noise-to-data ratio on digits", std(combined, n) / data_std[n], n)
    finest = max(grids)
    for n in grids:
        if n == finest:
            continue
        mode, band = band_excess(warmstart_prior("five_point"), n, finest)
        add(f"warm-start prior, 5-point: largest mode variance ratio vs {finest}²", mode, n)
        add(f"warm-start prior, 5-point: band variance ratio vs {finest}²", band, n)
    # the 5-point Matern(8) and InverseLaplacian: coarse levels vs the finest
    for n in (16, *grids):
        if n == finest:
            continue
        for name, prior in [
            ("Matern(8)", Matern(laplacian="five_point")),
            ("InverseLaplacian", InverseLaplacian(laplacian="five_point")),
        ]:
            mode, band = band_excess(prior, n, finest)
            add(f"5-point {name}: largest mode variance ratio vs {finest}²", mode, n)
            add(f"5-point {name}: band variance ratio vs {finest}²", band, n)

    # level resizing: periodic vs cosine Fourier downsampling
    lfw = Bundled("lfw", channels=1)
    count = len(lfw) if limit is None else min(limit, len(lfw))
    faces = torch.stack([lfw.render(i, 32) for i in range(count)]).double()
    shapes = Synthetic(num_images=64 if limit is None else limit, resolution=64, channels=1, seed=0)
    synthetic = torch.stack([shapes[i] for i in range(len(shapes))]).double()
    for name, images, coarse in [("LFW 32² -> 16²", faces, 16), ("Synthetic 64² -> 32²", synthetic, 32)]:
        for key, value in resize_difference(images, coarse).items():
            add(f"periodic - cosine downsampling {key}, {name}", value, coarse)
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--grids", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--limit", type=int, default=None, help="at most this many images per data set")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--name", default="multilevel_priors_cpu.json")
    add_device_options(parser, clock=False)
    options = parser.parse_args(argv)
    device = select_device(options)
    rows = compute(tuple(options.grids), options.limit)
    for row in rows:
        print(f"{row['figure']:>80} {row['grid']:>4} {row['value']:.4g}")
    return write_rows("multilevel_priors", options, device, rows)


if __name__ == "__main__":
    main()
