"""DVDP's schedule by formula: ``make_dvdp_schedule`` written out entry by entry, the validity checks at
their exact boundaries, and the lookups (``at``, ``stage_of``, ``stage_bounds``) on hand-made tables.

Each test pins a value a plausible slip changes: the log-linear tilt's exponent, the turning index it
reaches ``lambda_end`` at, the ``-1`` column of ``at``, a ``<`` for a ``<=`` in a bound.
"""

from __future__ import annotations

import math

import pytest
import torch

from rezdiff.core.pyramid import (
    DVDPSchedule,
    check_divisible,
    check_markov,
    down,
    make_dvdp_schedule,
    pool,
    up,
)
from rezdiff.core.schedules import alphas_cumprod, make_betas

pytestmark = pytest.mark.filterwarnings("ignore:schedule=.linear.:UserWarning")


def test_dvdp_schedule_is_the_log_linear_tilt_entry_by_entry() -> None:
    """``lam[i, t] = sqrt(abar_t) (lambda_end / sqrt(abar_{T-1}))^(min(t + 1, T) / T)``, ``T = T_{i+1}``."""
    turns, steps, end = (3, 7), 10, 0.02
    abar = alphas_cumprod(make_betas("linear", steps, 1e-3, 0.3)).tolist()
    schedule = make_dvdp_schedule(turns, steps, "linear", 1e-3, 0.3, lambda_end=end)
    assert schedule.turning_points == turns and schedule.lam.dtype == torch.float64
    gain = [end / math.sqrt(abar[turn - 1]) for turn in turns]
    expected = [
        [math.sqrt(a) * g ** (min(t + 1, turn) / turn) for t, a in enumerate(abar)]
        for g, turn in zip(gain, turns, strict=True)
    ]
    expected.append([math.sqrt(a) for a in abar])
    torch.testing.assert_close(schedule.lam, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=0)
    noise = torch.tensor([math.sqrt(1 - a) for a in abar], dtype=torch.float64)
    torch.testing.assert_close(schedule.sigma, noise.repeat(3, 1), rtol=1e-12, atol=0)
    assert schedule.levels == 2 and schedule.num_steps == steps


def test_the_base_schedule_options_reach_the_tables() -> None:
    cosine = make_dvdp_schedule((4,), 12, "cosine", process="subspace")
    abar = alphas_cumprod(make_betas("cosine", 12))
    torch.testing.assert_close(cosine.lam, abar.sqrt().repeat(2, 1), rtol=1e-12, atol=0)
    torch.testing.assert_close(cosine.sigma, (1 - abar).sqrt().repeat(2, 1), rtol=1e-12, atol=0)
    default = make_dvdp_schedule((500,), process="subspace")
    torch.testing.assert_close(default.lam[0], alphas_cumprod(make_betas("linear", 1000, 1e-4, 0.02)).sqrt())


@pytest.mark.parametrize(
    "turns, options, message",
    [
        ((0,), {}, r"turning points must lie in \[1, 9\], got \[0\]"),
        ((10,), {}, r"turning points must lie in \[1, 9\], got \[10\]"),
        ((3,), {"lambda_end": 0.0}, r"lambda_end must be in \(0, 0\.\d+\).*turning point 3\), got 0\.0"),
        ((3,), {"lambda_end": 1.0}, r"lambda_end must be in"),
        ((3,), {"process": "other"}, r"unknown process 'other'; expected 'dvdp' or 'subspace'"),
    ],
)
def test_make_dvdp_schedule_refuses_each_bad_argument(turns, options, message) -> None:
    with pytest.raises(ValueError, match=message):
        make_dvdp_schedule(turns, 10, "linear", 1e-3, 0.3, **options)


def test_the_last_and_first_legal_turning_points_are_accepted() -> None:
    for turns in ((1,), (9,), (1, 9), (1, 2)):
        schedule = make_dvdp_schedule(turns, 10, "linear", 1e-3, 0.3, lambda_end=1e-3)
        assert schedule.turning_points == turns
    base = alphas_cumprod(make_betas("linear", 10, 1e-3, 0.3)).sqrt().tolist()
    make_dvdp_schedule((3,), 10, "linear", 1e-3, 0.3, lambda_end=base[2] * (1 - 1e-9))  # just inside


def test_lambda_end_is_bounded_by_the_base_attenuation_at_the_turning_index() -> None:
    """The bound is ``sqrt(abar)`` at index ``T - 1`` (the last of the stage), itself excluded."""
    base = alphas_cumprod(make_betas("linear", 10, 1e-3, 0.3)).sqrt().tolist()
    for lambda_end in (base[2], (base[1] + base[2]) / 2):  # the bound itself; between T - 2 and T - 1
        with pytest.raises(ValueError, match=rf"^lambda_end must be in \(0, {base[2]:.4g}\) \(base sqrt"):
            make_dvdp_schedule((3,), 10, "linear", 1e-3, 0.3, lambda_end=lambda_end)


def _table(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_check_markov_accepts_a_kernel_of_zero_variance_and_refuses_the_smallest_negative_one() -> None:
    """``q^2 = sigma_t^2 - (lam_t / lam_{t-1})^2 sigma_{t-1}^2`` exactly 0 is a deterministic kernel (legal);
    the first step is measured against the data (``lam = 1``, ``sigma = 0``)."""
    lam, sigma = _table([[0.5, 0.25], [1.0, 1.0]]), _table([[0.0, 0.0], [0.0, 0.0]])
    check_markov(lam, sigma)  # everything deterministic: legal
    check_markov(_table([[0.5, 0.25]]), _table([[0.2, 0.1]]))  # q^2 = 0.01 - 0.25 * 0.04 = 0 at t = 1
    check_markov(_table([[0.5, 0.25]]), _table([[0.2, 0.1 - 1e-14]]))  # within atol = 1e-12
    first = r"^invalid DVDP schedule: component 0 at t=1 has sigma_t\^2 = 0\.0081 < .* = 0\.01; "
    with pytest.raises(ValueError, match=first + r"no Markov transition has these marginals \(Eq\. 7\)"):
        check_markov(_table([[0.5, 0.25]]), _table([[0.2, 0.09]]))
    with pytest.raises(ValueError, match=r"component 1 at t=2 "):
        check_markov(_table([[1.0, 1.0, 1.0], [0.9, 0.8, 0.8]]), _table([[0.1, 0.2, 0.3], [0.1, 0.2, 0.1]]))
    check_markov(_table([[0.5, 0.25]]), _table([[0.2, 0.09]]), atol=0.01)  # a larger tolerance passes
    # excess = 0.25^2 - 1 * 0.5^2 = -0.1875 exactly: a tolerance of exactly that much still passes
    check_markov(_table([[1.0, 1.0]]), _table([[0.5, 0.25]]), atol=0.1875)
    with pytest.raises(ValueError, match=r"\. Attenuate more slowly or add noise\.$"):
        check_markov(_table([[1.0, 1.0]]), _table([[0.5, 0.25]]), atol=0.1874)


@pytest.mark.parametrize(
    "lam, sigma", [([[1.0, 0.0]], [[0.1, 0.2]]), ([[1.0, -0.5]], [[0.1, 0.2]]), ([[1.0, 0.5]], [[0.1, -0.2]])]
)
def test_check_markov_refuses_a_non_positive_lambda_or_negative_sigma(lam, sigma) -> None:
    with pytest.raises(
        ValueError, match=r"^invalid DVDP schedule: lambda must be positive and sigma non-negative$"
    ):
        check_markov(_table(lam), _table(sigma))


def test_schedule_construction_checks_the_table_shapes_and_turning_points() -> None:
    good = make_dvdp_schedule((3,), 10, "linear", 1e-3, 0.3, lambda_end=0.05)
    lam, sigma = good.lam, good.sigma
    for bad_lam, bad_sigma in ((lam, sigma[:, :-1]), (lam[0], sigma[0]), (lam[:1], sigma[:1])):
        with pytest.raises(ValueError, match=r"must both be \[K \+ 1, T\] with K = 1"):
            DVDPSchedule((3,), bad_lam, bad_sigma)
    three_rows = lam[[0, 0, 1]], sigma[[0, 0, 1]]
    for turns in ((0, 3), (3, 3), (3, 10), (4, 3)):
        with pytest.raises(ValueError, match=r"strictly increasing in \[1, 9\]"):
            DVDPSchedule(turns, *three_rows)
    for turns in ((1, 9), (2, 3)):
        DVDPSchedule(turns, *three_rows)
    assert DVDPSchedule((), lam[1:], sigma[1:]).levels == 0
    bad_sigma = sigma.clone()
    bad_sigma[1, 5] = 0.5 * bad_sigma[1, 4]
    with pytest.raises(ValueError, match="component 1 at t=5"):
        DVDPSchedule((3,), lam, bad_sigma)


def test_at_reads_the_tables_with_the_data_column_at_minus_one() -> None:
    lam = _table([[0.9, 0.5, 0.2], [0.95, 0.8, 0.6]])
    sigma = _table([[0.3, 0.7, 0.9], [0.3, 0.7, 0.9]])
    schedule = DVDPSchedule((2,), lam, sigma)
    lams, sigs = schedule.at(torch.tensor([-1, 0, 2, 1]))
    assert len(lams) == len(sigs) == 2
    torch.testing.assert_close(lams[0], _table([[1.0, 0.9, 0.2, 0.5]])[0])
    torch.testing.assert_close(lams[1], _table([[1.0, 0.95, 0.6, 0.8]])[0])
    torch.testing.assert_close(sigs[0], _table([[0.0, 0.3, 0.9, 0.7]])[0])
    torch.testing.assert_close(sigs[1], sigs[0])
    lams, sigs = schedule.at(2, 1)  # one int, from component 1 on
    assert len(lams) == 1 and lams[0].shape == (1,)
    assert float(lams[0]) == 0.6 and float(sigs[0]) == 0.9
    lams, sigs = schedule.at(torch.tensor([[1], [0]]))  # any shape of t reads as a batch
    torch.testing.assert_close(lams[0], _table([[0.5, 0.9]])[0])


def test_at_follows_the_device_of_its_timesteps() -> None:
    """The tables move to ``t``'s device (the meta device stands in for an accelerator)."""
    schedule = make_dvdp_schedule((3,), 10, "linear", 1e-3, 0.3, lambda_end=0.05)
    lams, sigs = schedule.at(torch.tensor([2, 5], device="meta"))
    assert all(v.device.type == "meta" and v.shape == (2,) for v in lams + sigs)


def test_stage_lookups_at_every_boundary() -> None:
    schedule = make_dvdp_schedule((3, 7), 10, "linear", 1e-3, 0.3, lambda_end=0.01)
    t = torch.arange(10)
    assert schedule.stage_of(t).tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    assert schedule.stage_of(t.reshape(2, 5)).tolist() == [[0, 0, 0, 1, 1], [1, 1, 2, 2, 2]]
    assert int(schedule.stage_of(3)) == 1 and schedule.stage_of(6).ndim == 0
    assert [schedule.stage_bounds(k) for k in range(3)] == [(0, 3), (3, 7), (7, 10)]
    plain = make_dvdp_schedule((), 10, "linear", 1e-3, 0.3)
    assert plain.stage_of(t).tolist() == [0] * 10 and plain.stage_bounds(0) == (0, 10)
    stages = schedule.stage_of(torch.tensor([6, 7], device="meta"))
    assert stages.device.type == "meta" and stages.dtype == torch.long


def test_check_divisible_names_the_factor_and_the_size() -> None:
    check_divisible(8, 16, 3)
    check_divisible(5, 7, 0)
    for height, width in ((12, 16), (16, 12)):
        with pytest.raises(
            ValueError, match=rf"a 3-level pyramid needs H and W divisible by 2\^3 = 8, got {height}x{width}"
        ):
            check_divisible(height, width, 3)


def test_down_and_up_apply_their_operator_the_given_number_of_times() -> None:
    x = torch.arange(64.0, dtype=torch.float64).reshape(1, 1, 8, 8)
    assert torch.equal(down(x, 0), x) and torch.equal(up(x, 0), x)
    torch.testing.assert_close(down(x), 2 * pool(x))
    torch.testing.assert_close(down(x, 2), 4 * pool(pool(x)))
    torch.testing.assert_close(down(x, 3), 8 * x.mean().reshape(1, 1, 1, 1))
    torch.testing.assert_close(up(down(x, 3), 3), x.mean().expand_as(x))
    torch.testing.assert_close(pool(x)[0, 0, 0, 0], (x[0, 0, :2, :2]).mean())
    assert pool(x).shape == (1, 1, 4, 4)
