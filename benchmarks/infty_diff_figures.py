"""Figures of the ∞-Diff README that need no training, recomputed.

    python benchmarks/infty_diff_figures.py --out benchmarks/results

* **Noise per-pixel variance** at ``f = R / R0`` (``R0 = 64``, ``std = 1``) of the authors' rule ``T'(f eps)``
  (multiplier ``f m``) and of rezdiff's noise (``GaussianMollifier.noise_multiplier``), exact from the DCT
  multipliers, over the pixels at least 4 training pixels from the border (mean, min and max).
* **First step of "leading" spacing**: its timestep and ``sqrt(alpha_bar)`` under the cosine schedule with
  1000 steps (``rezdiff.core.schedules``), for 100, 25 and 10 steps.
* **Parameters** of ``configs/infty_diff_ffhq256.yaml``'s denoiser and encoder, built on the meta device,
  with ``latent_conditioning`` ``scale`` (the config) and ``embedding``.

A few seconds on one CPU thread.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from common import add_device_options, select_device, write_rows  # noqa: E402

from rezdiff.core.operators import dct_pixel_variance  # noqa: E402
from rezdiff.core.schedules import alphas_cumprod, cosine_betas, timestep_subsequence  # noqa: E402
from rezdiff.models.infty_diff.mollifier import GaussianMollifier  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "configs" / "infty_diff_ffhq256.yaml"


def noise_variances(base: int = 64, factors: tuple[float, ...] = (4.0, 2.0, 1.0, 0.5, 0.25)) -> list[dict]:
    """Rows of the per-pixel variance table (module docstring)."""
    rows = []
    for factor in factors:
        size = int(base * factor)
        mollifier = GaussianMollifier(1.0).scaled(factor)
        margin = math.ceil(4 * factor)
        for rule, multiplier in [
            ("T'(f eps) (the authors' rule)", factor * mollifier.multiplier(size, size)),
            ("rezdiff's noise", mollifier.noise_multiplier(size, size, factor)),
        ]:
            interior = dct_pixel_variance(multiplier)[margin:-margin, margin:-margin]
            rows.append(
                {
                    "figure": f"noise per-pixel variance: {rule}",
                    "f": factor,
                    "grid": size,
                    "value": float(interior.mean()),
                    "min": float(interior.min()),
                    "max": float(interior.max()),
                }
            )
    return rows


def leading_start(num_train_steps: int = 1000, steps: tuple[int, ...] = (100, 25, 10)) -> list[dict]:
    """The first timestep of ``"leading"`` spacing and its ``sqrt(alpha_bar)`` under the cosine schedule."""
    abar = alphas_cumprod(cosine_betas(num_train_steps))
    rows = []
    for n in steps:
        first = int(timestep_subsequence(num_train_steps, n, "leading")[0])
        rows.append(
            {
                "figure": f"leading spacing, {n} steps: sqrt(alpha_bar) at t = {first}",
                "value": float(abar[first].sqrt()),
            }
        )
    return rows


def parameter_counts(config: Path = CONFIG) -> list[dict]:
    """Parameters of the config's denoiser and encoder for both ``latent_conditioning`` forms (meta)."""
    from rezdiff.models import InftyDiff

    args = yaml.safe_load(config.read_text())["model"]["init_args"]
    args = {k: v for k, v in args.items() if k not in ("optimizer", "lr_scheduler", "ema")}
    rows = []
    for conditioning in ("scale", "embedding"):
        with torch.device("meta"):
            model = InftyDiff(**{**args, "latent_conditioning": conditioning})
        for part, module in model.network.named_children():
            count = sum(p.numel() for p in module.parameters())
            rows.append(
                {
                    "figure": f"{config.name} parameters: {part}, latent_conditioning {conditioning}",
                    "value": count,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--name", default="infty_diff_figures_cpu.json")
    parser.add_argument("--no-parameters", action="store_true", help="skip building the 256² network")
    add_device_options(parser, clock=False)
    options = parser.parse_args(argv)
    device = select_device(options)
    rows = noise_variances() + leading_start() + ([] if options.no_parameters else parameter_counts())
    for row in rows:
        print(f"{row['figure']:>90} {row.get('f', ''):>5} {row['value']:.6g}")
    return write_rows("infty_diff_figures", options, device, rows)


if __name__ == "__main__":
    main()
