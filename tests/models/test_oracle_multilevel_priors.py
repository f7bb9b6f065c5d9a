"""Dense oracles for the multilevel family's random-operator priors: rezdiff's ``FNOPrior`` (both bases),
the authors' FNO prior ``AuthorsFNOPrior`` and their combined prior ``CombinedCovariance``.

The references (``oracle_multilevel``: ``fno_prior_root``, ``authors_fno_root``,
``authors_inverse_laplacian_root``, ``combined_root``) build each prior as the explicit operator ``Q_n`` it is
the law of (an FNO spectral convolution from its docstring, the authors' ``SpectralConv2d`` and
``CombinedConv`` rewritten from their ``fno.py`` / ``priors.py``) as a dense float64 matrix on the grid, in
rezdiff's value convention, with no ``rezdiff.core`` import; then ``C_n = Q_n Q_n^T``. Checked against the
library on grids that hold the whole mode set and grids coarser than it, odd and even:

* ``apply`` is ``C_n``, ``sqrt`` is the symmetric root ``C_n^{1/2}`` (from the SVD of ``Q_n``) and applied
  twice gives ``C_n``; the per-pixel variance is ``tr C_n / n^2``;
* draws (``sample``) have covariance ``C_n`` (Monte Carlo: every whitened mode of the range to 5 standard
  errors, nothing outside the range of the finite-rank priors);
* a coarse grid holds the band-limited projection of the fine grid's random function (``R C_N R^T``) on the
  modes it holds in full.

There is no inverse or whitening operator in the library's covariance API, so none is checked. The
score-SDE sampling and loss under these priors are in ``test_oracle_multilevel.py``.
"""

from __future__ import annotations

import pytest
import torch

from rezdiff.models.multilevel.priors import (
    AuthorsFNOPrior,
    CombinedCovariance,
    Covariance,
    FNOPrior,
    InverseLaplacian,
)
from tests.models.oracle_multilevel import (
    PriorOperator,
    assert_follows,
    authors_fno_root,
    authors_inverse_laplacian_root,
    combined_root,
    fno_prior_reflect_root,
    fno_prior_root,
    inverse_laplacian_root,
    operator_matrix,
    resize_matrix,
    spectral_root,
)

pytestmark = pytest.mark.usefixtures("single_thread")

# name: (the library's prior, the same prior as a dense operator written from its docstring / the authors'
# code, its basis)
CASES: dict[str, tuple[Covariance, PriorOperator, str]] = {
    "fno": (FNOPrior(2, seed=3, scale=0.1), fno_prior_root(2, seed=3, scale=0.1), "periodic"),
    "fno_reflect": (
        FNOPrior(2, seed=3, scale=0.1, boundary="reflect"),
        spectral_root(fno_prior_reflect_root(2, seed=3, scale=0.1), "reflect"),
        "reflect",
    ),
    "authors_fno": (
        AuthorsFNOPrior(3, 2, seed=1, scale=0.02),
        authors_fno_root(3, 2, seed=1, scale=0.02),
        "periodic",
    ),
    # modes2 > n / 2 on 4²: the mirror of the half spectrum reaches the even grid's Nyquist column (dropped)
    "authors_fno_wide": (
        AuthorsFNOPrior(2, 3, seed=6, scale=0.02),
        authors_fno_root(2, 3, seed=6, scale=0.02),
        "periodic",
    ),
    # the warm-start config's prior (spectral Laplacian, constant mode dropped), small modes
    "combined": (
        CombinedCovariance(
            (InverseLaplacian(scale=0.15, zero_mode="drop"), AuthorsFNOPrior(3, 2, seed=2, scale=0.02))
        ),
        combined_root(
            spectral_root(inverse_laplacian_root(scale=0.15, drop_constant=True)),
            authors_fno_root(3, 2, seed=2, scale=0.02),
        ),
        "periodic",
    ),
    # the authors' CombinedConv exactly: their 5-point stencil's symbol by FFT
    "combined_authors": (
        CombinedCovariance(
            (
                InverseLaplacian(scale=0.15, zero_mode="drop", laplacian="five_point"),
                AuthorsFNOPrior(3, 2, seed=2, scale=0.02),
            )
        ),
        combined_root(authors_inverse_laplacian_root(scale=0.15), authors_fno_root(3, 2, seed=2, scale=0.02)),
        "periodic",
    ),
}
# 7, 8, 12 hold every mode of the FNO parts (|k| <= 3); 4, 5, 6 are coarser: the modes |k| < n / 2 of them
GRIDS = [4, 5, 6, 7, 8, 12]


def relative_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("name", list(CASES))
def test_covariance_and_its_root_are_the_dense_reference_on_every_grid(name: str) -> None:
    """``apply`` = ``Q Q^T``, ``sqrt`` = its symmetric root, ``sqrt(sqrt(x)) = C x``: to float64 rounding."""
    prior, reference, _ = CASES[name]
    for n in GRIDS:
        cov = reference.cov(n)
        assert relative_gap(operator_matrix(prior.apply, n), cov) < 1e-12, n
        assert relative_gap(operator_matrix(prior.sqrt, n), reference.symmetric_root(n)) < 1e-12, n
        x = torch.randn(3, n, n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
        twice = prior.sqrt(prior.sqrt(x)).reshape(3, -1)
        assert relative_gap(twice, x.reshape(3, -1) @ cov.T) < 1e-12, n
        assert prior.pixel_variance(n, n) == pytest.approx(float(cov.trace()) / n**2, rel=1e-12), n


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("n", [6, 8])
def test_draws_have_the_reference_covariance(name: str, n: int) -> None:
    """4096 draws (float32, the module's dtype): every whitened mode of the range of ``C_n`` has mean 0 and
    variance 1 to 5 standard errors (variance to +-11 %), modes are uncorrelated, nothing lies outside the
    range."""
    prior, reference, _ = CASES[name]
    draws = prior.sample((4096, n, n), generator=torch.Generator().manual_seed(n))
    assert draws.dtype == torch.float32
    assert_follows(draws, torch.zeros(n * n, dtype=torch.float64), reference.cov(n))


@pytest.mark.parametrize("name", [name for name in CASES if name != "combined_authors"])
@pytest.mark.parametrize("n", [4, 6])
def test_a_coarse_grid_holds_the_projection_of_the_fine_random_function(name: str, n: int) -> None:
    """``Pi_n C_n Pi_n = R C_16 R^T``: the library's prior on a coarse grid, on the modes ``|k| < n / 2`` (or
    the cosines ``u < n``) it holds in full (``Pi_n``: that projector), is the law of the 16² draw's
    band-limited projection ``R`` (pixel-centre phases included). Not with the authors' 5-point stencil,
    whose symbol changes with ``n`` (largest relative entry error 13 % on 4², 9 % on 6²; the README's
    deviations table)."""
    prior, _, boundary = CASES[name]
    fine = 16
    down = torch.kron(*(2 * [resize_matrix(fine, n, boundary)]))
    keep = torch.kron(*(2 * [resize_matrix(n, n, boundary)]))
    coarse = keep @ operator_matrix(prior.apply, n) @ keep.T
    projected = down @ operator_matrix(prior.apply, fine) @ down.T
    assert relative_gap(coarse, projected) < 1e-12


def test_the_smallest_mode_sets_are_priors_and_smaller_ones_are_refused() -> None:
    """``FNOPrior(0)`` is the constant mode alone (``C = scale^2`` everywhere) and ``AuthorsFNOPrior(1, 1)``
    the authors' one-weight convolution; one mode fewer is a one-line ValueError naming the argument."""
    constant = FNOPrior(0, seed=5, scale=0.5)
    assert (
        relative_gap(operator_matrix(constant.apply, 6), torch.full((36, 36), 0.25, dtype=torch.float64))
        < 1e-12
    )
    assert (
        relative_gap(operator_matrix(constant.apply, 6), fno_prior_root(0, seed=5, scale=0.5).cov(6)) < 1e-12
    )
    single = AuthorsFNOPrior(1, 1, seed=4, scale=0.3)
    assert (
        relative_gap(operator_matrix(single.apply, 5), authors_fno_root(1, 1, seed=4, scale=0.3).cov(5))
        < 1e-12
    )
    with pytest.raises(ValueError, match=r"^modes must be >= 0, got -1$"):
        FNOPrior(-1)
    for modes in [(0, 1), (1, 0)]:
        with pytest.raises(
            ValueError, match=rf"^modes1 and modes2 must be >= 1, got {modes[0]}, {modes[1]}$"
        ):
            AuthorsFNOPrior(*modes)
    message = (
        "AuthorsFNOPrior is an FFT convolution: boundary must be 'periodic', got 'reflect'; "
        "use FNOPrior(boundary='reflect') for cosine modes"
    )
    with pytest.raises(ValueError) as error:
        AuthorsFNOPrior(boundary="reflect")
    assert str(error.value) == message
