"""The closed-form sanity problem (slow): a trained FNO's score error at the training resolution and at 2x.

Run with ``python -m pytest -m slow tests/models/test_multilevel_sanity.py -s``; it prints the figures that
``src/rezdiff/models/multilevel/README.md`` reports.
"""

from __future__ import annotations

import time

import pytest
import torch

from rezdiff.core.schedules import vp_marginal
from rezdiff.data import FieldBatch
from rezdiff.models import MultilevelSDE
from rezdiff.models.multilevel.priors import Matern
from rezdiff.models.multilevel.sanity import RampMixture
from rezdiff.models.optimization import class_spec

TIMES = (0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)


def score_errors(
    model: MultilevelSDE, problem: RampMixture, resolution: int, num: int = 128
) -> dict[str, float]:
    """Relative squared error ``E|eps_model - eps*|^2 / E|eps*|^2`` over the times in ``TIMES``, and the same
    for the best score that ignores the mixture (both components weighed 1/2: the linear baseline)."""
    generator = torch.Generator().manual_seed(1234)
    model_error = baseline_error = reference = 0.0
    for value in TIMES:
        x0 = problem.sample(num, resolution, generator)
        t = torch.full((num,), value)
        x_t = problem.noisy(x0, t, generator)
        exact = problem.eps(x_t, t)
        with torch.no_grad():
            predicted = model.eps(x_t, t, use_ema=True)
        mean, std = (v.float().view(-1, 1, 1, 1) for v in vp_marginal(t))
        linear = std * (x_t - mean * problem.means(resolution, resolution).mean(0).float())
        model_error += float((predicted - exact).square().mean())
        baseline_error += float((linear - exact).square().mean())
        reference += float(exact.square().mean())
    return {"model": model_error / reference, "linear_baseline": baseline_error / reference}


def train(
    steps: int, resolution: int = 32, batch: int = 32, seed: int = 0
) -> tuple[MultilevelSDE, RampMixture]:
    torch.manual_seed(seed)
    problem = RampMixture(Matern(tau=8.0, power=0.55))
    model = MultilevelSDE(
        image_size=resolution,
        channels=1,
        prior=problem.prior,
        optimizer=class_spec("torch.optim.AdamW", lr=1e-3),
        ema={"decay": 0.99},
    )
    optimizer = model.configure_optimizers()
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        loss = model.loss(FieldBatch(image=problem.sample(batch, resolution, generator)), generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.ema.update(model.network, step)
    return model.eval(), problem


@pytest.mark.slow
def test_learned_score_matches_the_closed_form_at_train_resolution_and_2x() -> None:
    start = time.perf_counter()
    model, problem = train(steps=600)
    errors = {resolution: score_errors(model, problem, resolution) for resolution in (32, 64)}
    print(f"\ntrained 600 steps at 32² in {time.perf_counter() - start:.0f} s")
    for resolution, error in errors.items():
        print(
            f"relative score error at {resolution}²: model {error['model']:.4f}, "
            f"linear baseline {error['linear_baseline']:.4f}"
        )
    for error in errors.values():
        assert (
            error["model"] < 0.5 * error["linear_baseline"]
        )  # it learned the mixture, not only the linear part
    assert errors[64]["model"] < 2 * errors[32]["model"]  # and the learned score carries over to 2x
