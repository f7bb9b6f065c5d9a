"""INFD rendering cost: time and peak memory of whole vs tiled rendering by output size; pFID machinery.

    python benchmarks/infd_render.py --threads 1            # CPU rows: 256² .. 2048², pFID P/R at R = 256
    python benchmarks/infd_render.py --device cuda          # GPU rows: same, pFID 256/1024 .. 1024/1024

The committed CPU file was taken with ``--threads 1`` on a 2-core machine shared with other jobs (two
threads there wait on each other's descheduling). The model is ``INFDAutoencoder`` with the paper's decoder
and CLIF sizes, *randomly initialised*: time and memory depend on the shapes, not on the weights. One random
3×64×64 latent (the paper's) is decoded once into ``phi`` [128, 256, 256]; for each output resolution the
field is then rendered whole (one pass over the full query grid) and tiled (``--tile``/``--pad``,
``norm="global"``: exact, ``num_norms + 1`` passes over the tiles; ``--norms global sampled tile`` adds the
whole-image statistics estimated in one small pass and the authors' one-pass per-tile statistics). A whole
render whose predicted peak exceeds ``--memory-budget-gb`` is recorded as skipped with the reason; the
prediction is affine in the pixel count (a fixed part, copies of ``phi``, plus a per-pixel part), fitted to
whole renders at ``--probe-resolution`` and twice it.

Peak memory is measured above what existed before the call (weights, ``phi``) and includes the output.
CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``. CPU has no allocator counter:
``benchmarks.common.PeakMemory`` counts the bytes of live tensor storages created inside the call; as a
cross-check the process's resident-set high-water mark (``VmHWM`` after resetting it through
``/proc/self/clear_refs``) above the resident set at the start, which also sees backend scratch memory and
allocator caching. Every row records the output buffer's size, so that "tiled peak − output buffer" can be
read off: it stays flat in the resolution while the whole render's peak grows with the pixel count.

The second part times what one pFID "P/R" evaluation costs per generated image with the project's own
patch-FID code (``rezdiff.evaluation.Evaluate.crops``, its feature extractor, ``gaussian_stats`` and
``frechet_distance``): ``--pfid-images`` latents are decoded and rendered at R, one random P×P crop is drawn
per image, its features extracted, and the Fréchet distance to reference statistics (crops of the same
images with another seed, computed beforehand as the harness caches them) computed.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    PeakMemory,
    add_device_options,
    device_info,
    now,
    select_device,
    sync,
    write_report,
)

from rezdiff.evaluation import Evaluate  # noqa: E402
from rezdiff.metrics.fid import frechet_distance, gaussian_stats  # noqa: E402
from rezdiff.models.infd.autoencoder import INFDAutoencoder  # noqa: E402
from rezdiff.models.infd.clif import NORM_MODES  # noqa: E402

MIB = 2**20
PAPER_NOTE = (
    "INFD reports no rendering time or memory. Its quality figures (authors' README, FFHQ pFID of a trained "
    "model: 256/1K 7.91, 512/1K 6.73, 1K/1K 5.71) are not comparable with these cost figures of a randomly "
    "initialised model."
)


# ------------------------------------------------------------------------------------------ memory
def _status_bytes(field: str) -> int | None:
    try:
        found = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(found.group(1)) * 1024 if found else None


class ResidentPeak:
    """``peak``: the process's resident-set high-water mark during the block above its resident set at the
    start (Linux; ``None`` where ``/proc/self/clear_refs`` cannot reset the mark)."""

    def __init__(self) -> None:
        self.start: int | None = None
        self.peak: int | None = None

    def __enter__(self) -> ResidentPeak:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
            self.start = _status_bytes("VmRSS")
        except OSError:
            self.start = None
        return self

    def __exit__(self, *exc: object) -> None:
        high = _status_bytes("VmHWM")
        self.peak = None if self.start is None or high is None else max(0, high - self.start)


def measure(fn: Callable[[], Tensor], device: torch.device, repeats: int, warmup: int) -> dict[str, Any]:
    """Seconds on the ``--clock`` (minimum over ``repeats`` runs after ``warmup`` untimed ones) and peak
    bytes of ``fn()``.

    The first timed run also measures memory (under :class:`PeakMemory` on the CPU, whose per-operator
    bookkeeping cost ~5% of a tiled render at tile 64 on this project's CPU, less at larger tiles)."""
    for _ in range(warmup):
        fn()
    row: dict[str, Any] = {}
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        start = now()
        out = fn()
        sync(device)
        times = [now() - start]
        row["peak_bytes"] = torch.cuda.max_memory_allocated(device) - base
    else:
        with ResidentPeak() as resident, PeakMemory() as tracker:
            start = now()
            out = fn()
            times = [now() - start]
        row["peak_bytes"] = tracker.peak
        row["rss_peak_bytes"] = resident.peak
    row["output_bytes"] = out.numel() * out.element_size()
    del out
    for _ in range(repeats - 1):
        sync(device)
        start = now()
        fn()
        sync(device)
        times.append(now() - start)
    row["time_s"] = min(times)
    row["times_s"] = times
    row["peak_minus_output_bytes"] = row["peak_bytes"] - row["output_bytes"]
    return row


# ------------------------------------------------------------------------------------------ model
def build(options: argparse.Namespace) -> INFDAutoencoder:
    """The autoencoder at the chosen sizes (paper's by default), randomly initialised, in eval mode."""
    factor = 2 ** (len(options.channel_mult) - 1)
    torch.manual_seed(0)
    model = INFDAutoencoder(
        encoder_resolution=options.latent_size * factor,
        latent_channels=options.latent_channels,
        base_channels=options.base_channels,
        channel_mult=tuple(options.channel_mult),
        num_res_blocks=options.num_res_blocks,
        norm_num_groups=options.norm_groups,
        num_codes=options.num_codes,
        renderer=options.renderer,
        renderer_channels=options.renderer_channels,
        renderer_blocks=options.renderer_blocks,
        renderer_groups=options.renderer_groups,
        perceptual="none",
        disc_channels=8,
        disc_layers=1,
    )
    return model.eval().requires_grad_(False)


def tiles_per_side(resolution: int, tile: int) -> int:
    return 1 if resolution <= tile else -(-resolution // tile)


def whole_memory_model(
    model: INFDAutoencoder, phi: Tensor, probe: int, device: torch.device
) -> tuple[float, float]:
    """Peak bytes of a whole render as ``fixed + per_pixel * pixels``, fitted to whole renders at ``probe``
    and ``2 * probe`` (the fixed part: copies of ``phi`` made to gather its features)."""
    small, large = (
        measure(lambda r=r: model.render(phi, r, tile=None), device, 1, 0) for r in (probe, 2 * probe)
    )
    per_pixel = max(0.0, (large["peak_bytes"] - small["peak_bytes"]) / (3 * probe**2))
    return max(0.0, small["peak_bytes"] - per_pixel * probe**2), per_pixel


def rendering_rows(
    model: INFDAutoencoder, phi: Tensor, options: argparse.Namespace, device: torch.device
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Whole and tiled renders of ``phi`` at every resolution (whole skipped above the memory budget), and
    the fitted memory model of whole renders."""
    budget = options.memory_budget_gb * 2**30
    fixed, per_pixel = whole_memory_model(model, phi, options.probe_resolution, device)
    probe = options.probe_resolution
    for norm in options.norms:  # warm-up of the tiled path (first-call costs stay out of the rows)
        model.render(phi, probe, tile=max(1, probe // 2), pad=options.pad, norm=norm)
    rows = []
    for resolution in options.resolutions:
        predicted = fixed + per_pixel * resolution**2
        base = {"resolution": resolution, "batch": phi.shape[0]}
        configs: list[tuple[str, dict[str, Any]]] = [("whole", {"tile": None})]
        configs += [("tiled", {"tile": options.tile, "pad": options.pad, "norm": n}) for n in options.norms]
        for mode, kwargs in configs:
            row = {**base, "mode": mode, "tile": kwargs["tile"], "pad": kwargs.get("pad")}
            row["norm"] = kwargs.get("norm", "global")
            row["tiles"] = tiles_per_side(resolution, options.tile) ** 2 if mode == "tiled" else 1
            if mode == "whole":
                row["predicted_peak_bytes"] = predicted
            if mode == "whole" and predicted > budget:
                row["status"] = "skipped"
                row["reason"] = (
                    f"predicted peak {predicted / 2**30:.1f} GiB > memory budget "
                    f"{options.memory_budget_gb:g} GiB"
                )
            else:
                row["status"] = "done"
                render = lambda k=kwargs, r=resolution: model.render(phi, r, **k)  # noqa: E731
                row.update(measure(render, device, options.repeats, options.warmup))
            rows.append(row)
            print(_line(row), flush=True)
    return rows, {"fixed_bytes": fixed, "bytes_per_pixel": per_pixel}


def _line(row: dict[str, Any]) -> str:
    mode = row["mode"] if row["mode"] == "whole" else f"tiled {row['norm']}"
    if row["status"] != "done":
        return f"{row['resolution']:>6} {mode:<13} {'—':>9} {'—':>10} {'—':>10}  {row['reason']}"
    rss = row.get("rss_peak_bytes")
    return (
        f"{row['resolution']:>6} {mode:<13} {row['time_s']:>9.3f} {row['peak_bytes'] / MIB:>10.1f} "
        f"{row['peak_minus_output_bytes'] / MIB:>10.1f} {row['output_bytes'] / MIB:>9.1f}"
        + (f" {rss / MIB:>9.1f}" if rss is not None else "")
    )


# ------------------------------------------------------------------------------------------ pFID
def pfid_rows(model: INFDAutoencoder, options: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Per-image cost of pFID P/R with the harness's code: decode, render, crop, features, FID statistics."""
    resolution, count = options.pfid_resolution, options.pfid_images
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(
        count, options.latent_channels, options.latent_size, options.latent_size, generator=generator
    ).to(device)
    sync(device)
    start = time.perf_counter()
    phi = model.decode(latents)
    sync(device)
    decode_s = time.perf_counter() - start
    start = time.perf_counter()
    images = torch.cat(
        [model.render(phi[i : i + 1], resolution, tile=options.tile, pad=options.pad) for i in range(count)]
    )
    sync(device)
    render_s = time.perf_counter() - start
    del phi
    positions = list(range(count))
    rows = []
    for patch in options.pfid_patches:
        evaluate = Evaluate(
            metrics=["pfid"],
            num_samples=max(2, count),
            batch_size=options.pfid_batch,
            feature=options.feature,
            feature_path=options.feature_path,
            patch_size=patch,
        )
        extractor = evaluate.extractor.to(device)

        def features(crops: Tensor, extractor: torch.nn.Module = extractor) -> Tensor:
            step = options.pfid_batch
            return torch.cat([extractor(crops[i : i + step]).cpu() for i in range(0, len(crops), step)])

        reference = gaussian_stats(features(evaluate.crops(images, positions, (resolution,) * 2, tag=0)))
        features(images[:1, :, :patch, :patch])  # warm-up: extractor at this crop size, eigh
        frechet_distance(*reference, *reference)
        sync(device)
        start = time.perf_counter()
        crops = evaluate.crops(images, positions, (resolution,) * 2, tag=1)
        sync(device)
        crop_s = time.perf_counter() - start
        start = time.perf_counter()
        fake = features(crops)
        sync(device)
        features_s = time.perf_counter() - start
        start = time.perf_counter()
        frechet_distance(*gaussian_stats(fake), *reference)
        stats_s = time.perf_counter() - start
        row = {
            "patch": patch,
            "resolution": resolution,
            "label": f"{patch}/{resolution}",
            "images": count,
            "feature": extractor.name,
            "num_features": extractor.num_features,
            "decode_s_per_image": decode_s / count,
            "render_s_per_image": render_s / count,
            "crop_s_per_image": crop_s / count,
            "features_s_per_image": features_s / count,
            "fid_stats_s": stats_s,
        }
        row["metric_s_per_image"] = row["crop_s_per_image"] + row["features_s_per_image"] + stats_s / count
        row["total_s_per_image"] = row["decode_s_per_image"] + row["render_s_per_image"]
        row["total_s_per_image"] += row["metric_s_per_image"]
        rows.append(row)
        print(
            f"{row['label']:>10} {count:>6} {row['render_s_per_image']:>9.3f} "
            f"{row['crop_s_per_image']:>9.5f} {row['features_s_per_image']:>9.4f} {stats_s:>8.4f} "
            f"{row['metric_s_per_image']:>9.4f}",
            flush=True,
        )
    return {
        "statistic": "one timed run each; s_per_image = the set's time / images (FID statistics: per set)",
        "rows": rows,
    }


# ------------------------------------------------------------------------------------------ main
def main(args: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_device_options(parser)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--pad", type=int, default=8)
    parser.add_argument("--norms", nargs="+", choices=list(NORM_MODES), default=["global"])
    parser.add_argument("--batch", type=int, default=1, help="images rendered per call")
    parser.add_argument("--memory-budget-gb", type=float, default=None, help="skip whole renders above it")
    parser.add_argument("--probe-resolution", type=int, default=64, help="whole render sizing predictions")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed runs first (default: 1 CUDA, 0 CPU)"
    )
    model_args = parser.add_argument_group("model sizes (default: the paper's)")
    model_args.add_argument("--latent-size", type=int, default=64)
    model_args.add_argument("--latent-channels", type=int, default=3)
    model_args.add_argument("--base-channels", type=int, default=128)
    model_args.add_argument("--channel-mult", type=int, nargs="+", default=[1, 2, 4])
    model_args.add_argument("--num-res-blocks", type=int, default=2)
    model_args.add_argument("--norm-groups", type=int, default=32)
    model_args.add_argument("--num-codes", type=int, default=8192)
    model_args.add_argument("--renderer", choices=["clif", "liif"], default="clif")
    model_args.add_argument("--renderer-channels", type=int, default=256)
    model_args.add_argument("--renderer-blocks", type=int, default=2)
    model_args.add_argument("--renderer-groups", type=int, default=32)
    pfid = parser.add_argument_group(
        "pFID machinery (default R: 1024 on CUDA, 256 on the CPU; P: R/4, R/2, R)"
    )
    pfid.add_argument("--pfid-resolution", type=int, default=None)
    pfid.add_argument("--pfid-patches", type=int, nargs="*", default=None)
    pfid.add_argument("--pfid-images", type=int, default=8, help="0: skip the pFID part")
    pfid.add_argument("--pfid-batch", type=int, default=8)
    pfid.add_argument("--feature", choices=["random_conv", "inception", "torchscript"], default="random_conv")
    pfid.add_argument("--feature-path", default=None)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--name", default=None, help="result file name (default: infd_render_<device>.json)")
    options = parser.parse_args(args)
    device = select_device(options)
    cuda = device.type == "cuda"
    if options.warmup is None:
        options.warmup = 1 if cuda else 0
    if options.memory_budget_gb is None:
        total = torch.cuda.get_device_properties(device).total_memory if cuda else 8 * 2**30
        options.memory_budget_gb = round(0.8 * total / 2**30, 1) if cuda else 8.0
    if options.pfid_resolution is None:
        options.pfid_resolution = 1024 if cuda else 256
    if options.pfid_patches is None:
        options.pfid_patches = [options.pfid_resolution // 4, options.pfid_resolution // 2]
        options.pfid_patches.append(options.pfid_resolution)

    model = build(options).to(device)
    renderer = model.renderer
    generator = torch.Generator().manual_seed(0)
    latent = torch.randn(
        options.batch, options.latent_channels, options.latent_size, options.latent_size, generator=generator
    ).to(device)
    with torch.no_grad():
        sync(device)
        start = time.perf_counter()
        phi = model.decode(latent)
        sync(device)
        decode_s = time.perf_counter() - start
        phi_shape = list(phi.shape)
        print(f"decode {tuple(latent.shape)} -> phi {tuple(phi.shape)}: {decode_s:.3f} s")
        print(
            f"{'res':>6} {'mode':<13} {'time s':>9} {'peak MiB':>10} {'peak-out':>10} {'out MiB':>9}"
            + ("" if cuda else f" {'RSS MiB':>9}")
        )
        rows, whole_memory = rendering_rows(model, phi, options, device)
        del phi
        print(
            f"{'P/R':>10} {'images':>6} {'render s':>9} {'crop s':>9} {'feat s':>9} {'FID s':>8} "
            f"{'metric s':>9}  (per image; FID statistics per set)"
        )
        pfid_part = (
            pfid_rows(model, options, device) if options.pfid_images else {"skipped": "--pfid-images 0"}
        )
    memory = (
        "torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus memory_allocated before"
        if cuda
        else "live tensor bytes: benchmarks.common.PeakMemory (TorchDispatchMode; storages created in the "
        "call and alive at once; backend scratch not seen); rss_peak_bytes: VmHWM (reset through "
        "/proc/self/clear_refs) minus VmRSS before the call (includes scratch and allocator caching)"
    )
    report = {
        "benchmark": "infd_rendering",
        "settings": {key: value for key, value in vars(options).items() if key != "out"},
        "device": device_info(device),
        "model": {
            "class": "INFDAutoencoder",
            "weights": "random initialisation (timings and memory depend on shapes only)",
            "decoder_parameters": sum(p.numel() for p in model.decoder.parameters()),
            "renderer_parameters": sum(p.numel() for p in renderer.parameters()),
            "latent_shape": list(latent.shape),
            "phi_shape": phi_shape,
            "renderer_receptive_radius": renderer.receptive_radius,
            "renderer_norms": renderer.num_norms,
        },
        "memory_method": memory,
        "statistic": "time_s: minimum over --repeats runs after --warmup untimed runs; the first timed run "
        "also measures peak memory (bytes above those allocated before the call, output included)",
        "decode_s": decode_s,
        "whole_memory_model": whole_memory,
        "rows": rows,
        "pfid": pfid_part,
        "paper": {"note": PAPER_NOTE},
    }
    return write_report(report, options.out, options.name or f"infd_render_{device.type}.json")


if __name__ == "__main__":
    main()
