"""Quality vs the turning point T_1 for DVDP and subspace diffusion (the analogue of the paper's Fig. 4).

    python benchmarks/dvdp_turning_points.py                       # quickstart data and U-Net, CPU
    python benchmarks/dvdp_turning_points.py --turning-points 200 400 600 800 --steps 2000

For each T_1 and each process (``dvdp``: attenuated components; ``subspace``: Jing et al., shared
schedule) a model with the quickstart's U-Net (``configs/quickstart/dvdp.yaml``) is trained from the same
seed, for the same number of steps on the same built-in synthetic images, then sampled (ancestral,
``--sample-steps``) and scored by multi-scale SWD against held-out images the model never saw. The
paper's claim: DVDP is much less sensitive to T_1 than subspace diffusion, the gap growing as T_1
shrinks. The JSON in ``benchmarks/results/`` records device, versions, settings and every score.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from common import device_info, write_report  # noqa: E402

from rezdiff.data import FieldBatch, FullGrid, Synthetic  # noqa: E402
from rezdiff.metrics import multiscale_swd  # noqa: E402
from rezdiff.models import DVDP  # noqa: E402
from rezdiff.models.base import step_generator  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "quickstart" / "dvdp.yaml"


def train(model: DVDP, dataset: Synthetic, train_size: int, options: argparse.Namespace) -> float:
    """Plain training loop (AdamW + warmup + clipping + EMA, as the quickstart); returns seconds."""
    view = FullGrid(options.resolution)
    configured = model.configure_optimizers()  # the config's optimiser and warm-up schedule
    optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
    scheduler = configured["lr_scheduler"]["scheduler"] if isinstance(configured, dict) else None
    order = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for step in range(options.steps):
        index = torch.randint(0, train_size, (options.batch,), generator=order).tolist()
        batch = FieldBatch.collate([view(dataset, i) for i in index])
        loss = model.loss(batch, step_generator(0, step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.network.parameters(), 1.0)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        model.ema.update(model.network, step)
    return time.perf_counter() - start


def main(args: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turning-points", type=int, nargs="+", default=[200, 400, 600, 800])
    parser.add_argument("--processes", nargs="+", default=["dvdp", "subspace"], choices=["dvdp", "subspace"])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--num-eval", type=int, default=64)
    parser.add_argument("--sample-steps", type=int, default=100)
    parser.add_argument("--lambda-end", type=float, default=0.01)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    options = parser.parse_args(args)
    base = yaml.safe_load(CONFIG.read_text())["model"]["init_args"]
    dataset = Synthetic(num_images=2048, resolution=options.resolution)
    train_size = len(dataset) - options.num_eval
    held_out = torch.stack([dataset.render(i, options.resolution) for i in range(train_size, len(dataset))])
    rows = []
    for turning_point in options.turning_points:
        for process in options.processes:
            torch.manual_seed(0)
            model = DVDP(
                **{
                    **base,
                    "turning_points": (turning_point,),
                    "process": process,
                    "lambda_end": options.lambda_end,
                    "image_size": options.resolution,
                }
            )
            seconds = train(model, dataset, train_size, options)
            samples = model.sample(
                options.num_eval,
                steps=options.sample_steps,
                sampler="ddpm",
                generator=torch.Generator().manual_seed(1),
            )
            swd = multiscale_swd(held_out, samples, generator=torch.Generator().manual_seed(0))["swd_mean"]
            rows.append({"T1": turning_point, "process": process, "swd_x1e3": swd, "train_seconds": seconds})
            print(json.dumps(rows[-1]))
    print(
        f"{'T1':>5} "
        + " ".join(f"{p:>10}" for p in options.processes)
        + "   (multi-scale SWD x1e3, lower is better)"
    )
    for turning_point in options.turning_points:
        cells = [
            next(r["swd_x1e3"] for r in rows if r["T1"] == turning_point and r["process"] == p)
            for p in options.processes
        ]
        print(f"{turning_point:>5} " + " ".join(f"{c:>10.1f}" for c in cells))
    report = {
        "benchmark": "dvdp_turning_points",
        "settings": {key: value for key, value in vars(options).items() if key != "out"},
        "model": {key: value for key, value in base.items() if key not in ("turning_points", "process")},
        "device": device_info(torch.device("cpu")),
        "rows": rows,
    }
    return write_report(report, options.out, "dvdp_turning_points_cpu.json")


if __name__ == "__main__":
    main()
