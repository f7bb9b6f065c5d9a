"""Quickstart SWD with the old and the new DDIM settings: "leading" vs "trailing" spacing (issue 14, item 3)
and DDIM's ε after clipping x̂₀ (item 13), at 1x and 2x the training resolution.

    python benchmarks/spacing_swd.py --ckpt runs/quickstart_ddpm/checkpoints/last.ckpt \
        --config configs/quickstart/ddpm.yaml --name ddpm
    python benchmarks/spacing_swd.py --ckpt runs/quickstart_infty_diff/checkpoints/last.ckpt \
        --config configs/quickstart/infty_diff.yaml --name infty_diff --steps 25

One checkpoint, one set of seeds: every variant starts from the same noise (generator seed 1) and is scored
by multi-scale SWD against the same held-out images at that resolution (the first ``--num`` of the data
module's validation split, ``dataset.render``), with the same patch positions (generator seed 0) -- the way
``tests.helpers.quickstart_swd`` computes the READMEs' quickstart figures. Variants: ``leading/network``
(rezdiff's old default: diffusers' leading spacing, the network's ε kept after clipping), ``trailing/network``
and ``trailing/from_x0`` (the new defaults: start at T - 1, ε re-derived from the clipped x̂₀). A model whose
``sample`` has no ``eps_after_clip`` (INFD's latent DDIM does not clip) is run at ``leading`` and
``trailing`` alone. ``--untrained`` adds, at each resolution, the same model untrained (same hyperparameters,
weights drawn after ``torch.manual_seed(0)``) at its default settings: the READMEs' reference row. The JSON in
``benchmarks/results/spacing_swd_<name>_cpu.json`` records the settings and every score.

    python benchmarks/spacing_swd.py --ckpt runs/quickstart_infd_latent/checkpoints/last.ckpt \
        --config configs/quickstart/infd_latent.yaml --name infd_latent
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from common import add_device_options, device_info, select_device, untrained_like, write_report  # noqa: E402

import rezdiff  # noqa: E402
from rezdiff.data import FieldDataModule, FullGrid, Synthetic  # noqa: E402
from rezdiff.metrics import multiscale_swd  # noqa: E402

VARIANTS = (("leading", "network"), ("trailing", "network"), ("trailing", "from_x0"))
"""(spacing, eps_after_clip) pairs of a model whose DDIM clips x̂₀."""
SPACINGS = (("leading", None), ("trailing", None))
"""The variants of a model that does not clip: spacing alone."""


def parse_variants(specs: list[str] | None, clips: bool, model: str) -> list[tuple[str, str | None]]:
    """``spacing[/eps_after_clip]`` strings as pairs; the default is every variant the model has."""
    if specs is None:
        return list(VARIANTS if clips else SPACINGS)
    variants: list[tuple[str, str | None]] = []
    for spec in specs:
        spacing, _, eps_after_clip = spec.partition("/")
        if eps_after_clip and not clips:
            raise ValueError(
                f"--variants {spec}: {model}.sample has no eps_after_clip (it does not clip); "
                f"pass the spacing alone, e.g. --variants {spacing}"
            )
        variants.append((spacing, eps_after_clip or None))
    return variants


def held_out(config: Path, num: int) -> tuple[Synthetic, list[int]]:
    """The quickstart's dataset and the first ``num`` indices of its validation split."""
    data = yaml.safe_load(config.read_text())["data"]["init_args"]
    dataset_spec = data["dataset"]
    if not dataset_spec["class_path"].endswith("Synthetic"):
        raise ValueError(f"{config}: this benchmark reads the built-in Synthetic data, got {dataset_spec}")
    dataset = Synthetic(**dataset_spec["init_args"])
    module = FieldDataModule(
        dataset, FullGrid(dataset_spec["init_args"]["resolution"]), val_fraction=data["val_fraction"]
    )
    return dataset, module.split()[1][:num]


def main(args: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="a trained quickstart checkpoint")
    parser.add_argument("--config", required=True, help="its quickstart config (for the held-out images)")
    parser.add_argument("--name", required=True, help="result file: spacing_swd_<name>_<device>.json")
    parser.add_argument("--num", type=int, default=64, help="samples and held-out images per resolution")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the model's)")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64])
    parser.add_argument(
        "--variants",
        nargs="+",
        default=None,
        help="spacing[/eps_after_clip] (default: the three above, or the two spacings of a model without "
        "eps_after_clip)",
    )
    parser.add_argument(
        "--untrained", action="store_true", help="also score the same model untrained at its defaults"
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    add_device_options(parser)
    options = parser.parse_args(args)
    device = select_device(options)

    model = rezdiff.load(options.ckpt, map_location=device).eval()
    dataset, indices = held_out(Path(options.config), options.num)
    clips = "eps_after_clip" in inspect.signature(model.sample).parameters
    variants = parse_variants(options.variants, clips, type(model).__name__)
    untrained = None
    if options.untrained:
        untrained = untrained_like(model).to(device)
    rows: list[dict[str, Any]] = []
    report = {
        "benchmark": "spacing_swd",
        "checkpoint": str(options.ckpt),
        "config": str(options.config),
        "model": type(model).__name__,
        "steps": options.steps or model.sample_steps,
        "num": options.num,
        "seeds": {"samples": 1, "swd_positions": 0},
        "device": device_info(device),
        "rows": rows,
    }
    name = f"spacing_swd_{options.name}_{device.type}.json"
    runs: list[tuple[str, Any, str | None, str | None]] = [("trained", model, *v) for v in variants]
    if untrained is not None:
        runs.append(("untrained", untrained, None, None))  # None: the model's default
    for resolution in options.resolutions:
        real = torch.stack([dataset.render(i, resolution) for i in indices])
        for weights, network, spacing, eps_after_clip in runs:
            start = time.perf_counter()
            settings: dict[str, Any] = {"spacing": spacing}
            if eps_after_clip is not None:
                settings["eps_after_clip"] = eps_after_clip
            fake = network.sample(
                len(real),
                resolution,
                steps=options.steps,
                generator=torch.Generator().manual_seed(1),
                **settings,
            ).cpu()
            swd = multiscale_swd(real, fake, generator=torch.Generator().manual_seed(0))["swd_mean"]
            rows.append(
                {
                    "model": options.name,
                    "weights": weights,
                    "resolution": resolution,
                    "spacing": spacing or f"{network.spacing} (default)",
                    "eps_after_clip": (eps_after_clip or _default_eps(network)) if clips else "no clipping",
                    "swd_x1e3": round(float(swd), 2),
                    "seconds_under_load": round(time.perf_counter() - start, 1),
                }
            )
            print(rows[-1], flush=True)
            write_report(report, options.out, name)  # after every row: a long run keeps what it measured
    return write_report(report, options.out, name)


def _default_eps(network: Any) -> str:
    """The model's own ``eps_after_clip`` setting, labelled as its default."""
    return f"{network.eps_after_clip} (default)"


if __name__ == "__main__":
    main()
