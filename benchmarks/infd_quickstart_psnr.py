"""INFD stage 1 on the quickstart data: reconstruction PSNR of held-out images, trained vs untrained.

    PYTHONPATH=src python benchmarks/infd_quickstart_psnr.py \
        --ckpt runs/quickstart_infd/checkpoints/last.ckpt --label "quickstart run"

Computed as ``tests/models/test_infd_quality.py`` (slow) does, for each ``--ckpt``: the held-out images are
the first ``--num`` (32) validation indices of the run's data module (``datamodule.split()[1]``), the
encoder input is ``dataset.render(i, encoder_resolution)`` (32² for the quickstart) and the reference at
each of ``--resolutions`` (32 128) is the exact ``dataset.render(i, resolution)`` of the continuous image;
the score is :func:`rezdiff.metrics.reconstruction.psnr` of ``model.reconstruct(inputs, resolution)``.
"Untrained" is the same architecture (the checkpoint's hyperparameters) with seed-0 initial weights:
``torch.manual_seed(0)`` right before it is built (the slow test instead draws it after training).

The data module is built from the ``data:`` section of the config the checkpoint was trained with: the
``config.yaml`` that ``rezdiff fit`` writes into the run folder (``<run>/checkpoints/x.ckpt`` →
``<run>/config.yaml``), or ``--config`` where given or where the run folder has none. One row per
checkpoint and resolution, written to ``--out/--name`` as JSON with the held-out indices in ``settings``.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import ArgumentParser

sys.path.insert(0, str(Path(__file__).parent))
from common import device_info, untrained_like, write_report  # noqa: E402

import rezdiff  # noqa: E402
from rezdiff.data.datamodule import FieldDataModule  # noqa: E402
from rezdiff.metrics.reconstruction import psnr  # noqa: E402
from rezdiff.models.infd import INFDAutoencoder  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
QUICKSTART = REPO / "configs" / "quickstart" / "infd.yaml"


def shown(path: str | Path) -> str:
    """``path`` relative to the working directory where it lies inside it (result files name no machine)."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(Path.cwd())) if resolved.is_relative_to(Path.cwd()) else str(path)


def run_config(ckpt: str | Path) -> Path | None:
    """The ``config.yaml`` of the run folder that holds ``ckpt`` (``<run>/checkpoints/<ckpt>``), if any."""
    config = Path(ckpt).resolve().parent.parent / "config.yaml"
    return config if config.is_file() else None


def build_datamodule(config: str | Path) -> FieldDataModule:
    """The ``data:`` section of a ``rezdiff fit`` config, instantiated as the CLI does (jsonargparse)."""
    data = yaml.safe_load(Path(config).read_text())["data"]
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(FieldDataModule, "data", required=True)
    parsed = parser.parse_object({"data": data})
    # ``instantiate`` since jsonargparse 4.49, where ``instantiate_classes`` became its deprecated name
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    return instantiate(parsed).data


@torch.no_grad()
def measure(
    model: INFDAutoencoder,
    datamodule: FieldDataModule,
    resolutions: list[int],
    num: int = 32,
) -> list[dict[str, Any]]:
    """PSNR (dB) of ``model`` and of :func:`untrained_like` it on the first ``num`` held-out images: one
    row per resolution, ``{"resolution", "trained_db", "untrained_db"}``."""
    model = model.eval()
    untrained = untrained_like(model)
    dataset = datamodule.dataset
    held_out = datamodule.split()[1][:num]
    inputs = torch.stack([dataset.render(i, model.encoder_resolution) for i in held_out])
    rows = []
    for resolution in resolutions:
        reference = torch.stack([dataset.render(i, resolution) for i in held_out])
        trained_db, untrained_db = (
            psnr(m.reconstruct(inputs, resolution), reference) for m in (model, untrained)
        )
        rows.append({"resolution": resolution, "trained_db": trained_db, "untrained_db": untrained_db})
    return rows


def file_date(path: str | Path) -> str:
    """The UTC date of ``path``'s last modification (when a checkpoint was written), ``YYYY-MM-DD``."""
    return datetime.fromtimestamp(Path(path).stat().st_mtime, timezone.utc).date().isoformat()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", nargs="+", required=True, help="INFDAutoencoder (stage 1) checkpoints")
    parser.add_argument("--label", nargs="+", default=None, help="one per --ckpt (default: the path)")
    parser.add_argument(
        "--run-date", nargs="+", default=None, help="one per --ckpt (default: the file's date, UTC)"
    )
    parser.add_argument(
        "--config",
        default=None,
        help="the training config (default: the run folder's config.yaml, else configs/quickstart/infd.yaml)",
    )
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--num", type=int, default=32, help="held-out images")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--name", default="quickstart_infd_psnr_cpu.json")
    parser.add_argument("--note", default="", help="stored in the JSON")
    options = parser.parse_args(argv)
    count = len(options.ckpt)
    labels = options.label or list(options.ckpt)
    dates = options.run_date or [file_date(path) for path in options.ckpt]
    if len(labels) != count or len(dates) != count:
        parser.error(f"--label and --run-date need one value per --ckpt ({count})")
    if options.threads:
        torch.set_num_threads(options.threads)
    rows, runs = [], []
    for path, label, run_date in zip(options.ckpt, labels, dates, strict=True):
        config = Path(options.config) if options.config else run_config(path) or QUICKSTART
        datamodule = build_datamodule(config)
        model = rezdiff.load(path)
        if not isinstance(model, INFDAutoencoder):
            raise SystemExit(
                f"{path}: an INFDAutoencoder (stage 1) checkpoint is needed, got {type(model).__name__}"
            )
        for row in measure(model, datamodule, options.resolutions, options.num):
            rows.append({"label": label, "run_date": run_date, **row})
            print(rows[-1])
        runs.append(
            {
                "label": label,
                "ckpt": shown(path),
                "config": shown(config),
                "encoder_resolution": model.encoder_resolution,
                "held_out": datamodule.split()[1][: options.num],
            }
        )
    report = {
        "benchmark": "quickstart_infd_psnr",
        "device": device_info(torch.device("cpu")),
        "settings": {
            "num": options.num,
            "resolutions": options.resolutions,
            "input": "dataset.render(i, encoder_resolution)",
            "reference": "dataset.render(i, resolution), the exact render",
            "metric": "rezdiff.metrics.reconstruction.psnr (per image on [0, 1], averaged)",
            "untrained": "the checkpoint's hyperparameters, torch.manual_seed(0) right before building",
            "runs": runs,
        },
        "note": options.note,
        "rows": rows,
    }
    return write_report(report, options.out, options.name)


if __name__ == "__main__":
    main()
