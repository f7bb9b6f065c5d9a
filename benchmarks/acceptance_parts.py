"""The parts of ``gpu_acceptance.py``: each a function of a :class:`Context` that returns a flat summary.

Every part reuses an existing benchmark (``sparse_conv``, ``infty_diff_subsampling``, ``dvdp_speedup``,
``infd_render``, ``train_throughput``) at the acceptance's sizes, or the ``fit`` path of a paper config; a
part returns ``{"rows": [flat dicts], "notes": [...], ...}`` and raises on failure (the runner records it).
``Context.smoke`` picks toy sizes that run on 2 CPU cores in seconds, so every code path stays exercised.
"""

from __future__ import annotations

import importlib
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning
import torch
import torch.nn.functional as F
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from common import sync  # noqa: E402


def benchmark(name: str) -> Any:
    """The benchmark script ``name`` as a module, imported when a part first needs it: rezdiff (and what it
    imports: diffusers, neuraloperator, jsonargparse) missing then fails that part, not the whole run."""
    return importlib.import_module(name)


@dataclass
class Context:
    """What a part needs: the device, toy sizes or not, where sub-benchmarks write, its time budget."""

    device: torch.device
    smoke: bool
    raw_out: Path
    budget_s: float
    vgg_weights: str | None = None

    def device_args(self) -> list[str]:
        return ["--device", self.device.type, "--out", str(self.raw_out)]


class Skipped(Exception):
    """A part that cannot run here (a missing package, no GPU); recorded as ``skipped``, not ``failed``."""


# ------------------------------------------------------------------------------------------ gpu tests
def gpu_test_files() -> list[str]:
    """Test files that hold ``gpu``-marked tests (a text scan: collecting the whole suite costs minutes)."""
    return sorted(
        str(path.relative_to(REPO))
        for path in (REPO / "tests").rglob("test_*.py")
        if "mark.gpu" in path.read_text()
    )


def junit_outcomes(path: Path) -> list[dict[str, str]]:
    """One ``{"test", "outcome", "message"}`` per test case of a JUnit XML file."""
    rows = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                message = (child.get("message") or "").splitlines()[0][:200] if child.get("message") else ""
        rows.append(
            {"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome, "message": message}
        )
    return rows


def gpu_tests(ctx: Context) -> dict[str, Any]:
    """``pytest -m gpu`` on the files with gpu tests, in a subprocess; one row per test."""
    files = gpu_test_files()
    scratch = tempfile.TemporaryDirectory(prefix="gpu_tests_")
    junit = Path(scratch.name) / "junit.xml"
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"]
    command += [f"--junitxml={junit}", *files]
    paths = [str(REPO / "src"), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=ctx.budget_s)
    if not junit.is_file():
        tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"pytest wrote no JUnit file (exit {done.returncode}): {tail[0]}")
    rows = junit_outcomes(junit)
    scratch.cleanup()
    counts = {k: sum(r["outcome"] == k for r in rows) for k in ("passed", "failed", "error", "skipped")}
    bad = [r["test"] for r in rows if r["outcome"] in ("failed", "error")]
    result = {"files": files, "pytest_exit": done.returncode, **counts, "rows": rows}
    if bad:
        raise PartialFailure(f"{len(bad)} of {len(rows)} gpu tests failed: {', '.join(bad)}", result)
    return result


# ------------------------------------------------------------------------------------------ sparse operator
def sparse(ctx: Context) -> dict[str, Any]:
    """The sparse operator's rows and the density up to which the loop backend beats dense (``auto``)."""
    sizes = (
        ["--resolutions", "16", "--densities", "0.25", "1", "--batch", "1", "--channels", "4"]
        + ["--repeats", "1", "--warmup", "0"]
        if ctx.smoke
        else ["--resolutions", "64", "128", "256", "--batch", "32", "--repeats", "5", "--warmup", "2"]
    )
    report = benchmark("sparse_conv").main([*sizes, *ctx.device_args()])
    loop = "triton" if "triton" in report["settings"]["backends"] else "gather"
    return {
        "auto_loop_backend": loop,
        "measured_threshold": report.get(f"{loop}_wins_up_to_density"),
        "auto_threshold_in_code": report["auto_threshold_in_code"],
        "rows": report["rows"],
        "notes": [
            f"measured_threshold: the largest density up to which `{loop}` (what auto runs below the "
            "threshold on this device) beats the dense backend at every resolution measured"
        ],
    }


# ------------------------------------------------------------------------------------------ ∞-Diff
def infty_diff(ctx: Context) -> dict[str, Any]:
    """Tables 4-5's setting (256² data, 64² inner grid, bf16, batch 16, 10 GB budget), rates 1x-16x."""
    if ctx.smoke:
        sizes = ["--resolutions", "16", "--inner", "8", "--rates", "1", "4", "--batch", "1", "--steps", "1"]
        sizes += ["--warmup", "0", "--network", "cpu", "--sparse-width", "8", "--inner-channels", "8"]
        sizes += ["--head-dim", "8", "--norm-groups", "4", "--attention", "4", "--no-fixed-memory"]
    else:
        sizes = ["--resolutions", "256", "--inner", "64", "--rates", "1", "2", "4", "8", "16"]
        sizes += ["--batch", "16", "--precision", "bf16", "--network", "paper", "--steps", "3"]
        sizes += ["--warmup", "1", "--memory-budget", "10", "--max-batch", "256"]
    reports = benchmark("infty_diff_subsampling").main([*sizes, *ctx.device_args()])
    [report] = reports.values()
    keys = (
        "resolution", "inner", "rate", "sparse_backend", "batch", "s_per_step", "peak_bytes",
        "memory_reduction",
        "paper_memory_reduction", "speedup", "fixed_memory_batch", "fixed_memory_images_per_s",
        "fixed_memory_speedup", "paper_speedup_fixed_memory",
    )  # fmt: skip
    return {
        "rows": [{k: row.get(k) for k in keys} for row in report["rows"]],
        "notes": [
            "paper: ∞-Diff App. C Table 5 (memory reduction, batch 16) and Table 4 (speed-up at 10 GB), one "
            f"A100; precision {report['settings']['precision']}, network {report['settings']['network']}"
        ],
    }


# ------------------------------------------------------------------------------------------ DVDP
def dvdp(ctx: Context) -> dict[str, Any]:
    """DVDP (K = 2, {300, 600}) vs DDPM with the same U-Net at 256² (Table 1; the U-Net of
    ``configs/ddpm_ffhq256.yaml``), bf16."""
    if ctx.smoke:
        sizes = ["--resolution", "16", "--width", "16", "32", "--attention", "--batch", "2", "--steps", "1"]
        sizes += ["--warmup", "0", "--sample-batch", "1", "--sample-steps", "2"]
    else:
        sizes = [
            "--resolution", "256", "--width", "128", "128", "256", "256", "512", "512", "--attention", "4",
            "--head-dim", "64", "--batch", "16", "--steps", "10", "--warmup", "2", "--sample-batch", "16",
            "--sample-steps", "20", "--bf16",
        ]  # fmt: skip
    report = benchmark("dvdp_speedup").main([*sizes, "--levels", "0", "--table1", *ctx.device_args()])
    keys = (
        "model", "K", "turning_points", "train_s_per_iter", "sample_s_per_sample", "train_speedup",
        "ideal_train_speedup", "sample_speedup", "ideal_sample_speedup",
    )  # fmt: skip
    paper = report["paper"]["table1_256"]
    rows = [{k: row.get(k) for k in keys} for row in report["rows"]]
    for row in rows:
        ddpm = row["K"] == 0
        row["paper_s_per_iter"] = paper["ddpm_s_per_iter" if ddpm else "dvdp_s_per_iter"]
        row["paper_s_per_sample"] = paper["ddpm_s_per_sample" if ddpm else "dvdp_s_per_sample"]
        row["paper_train_speedup"] = None if ddpm else paper["train_speedup"]
        row["paper_sample_speedup"] = None if ddpm else paper["sample_speedup"]
    s = report["settings"]
    return {
        "rows": rows,
        "notes": [
            f"batch {s['batch']}, {s['sample_batch']} samples per call, DDIM {s['sample_steps']} steps (the "
            "paper's s/sample is its own sampler's: compare the ratios), bf16 "
            f"{s['bf16']}; paper: DVDP Table 1 (256², one A100)"
        ],
    }


# ------------------------------------------------------------------------------------------ INFD
def infd(ctx: Context) -> dict[str, Any]:
    """INFD render 256² -> 2048², whole vs tiled: time and peak memory (max_memory_allocated on CUDA)."""
    if ctx.smoke:
        sizes = ["--resolutions", "32", "64", "--tile", "32", "--pad", "8", "--latent-size", "8"]
        sizes += ["--base-channels", "16", "--channel-mult", "1", "2", "--num-res-blocks", "1"]
        sizes += ["--norm-groups", "4", "--num-codes", "16", "--renderer-channels", "16"]
        sizes += ["--renderer-groups", "4", "--probe-resolution", "16", "--pfid-resolution", "16"]
    else:
        sizes = ["--resolutions", "256", "512", "1024", "2048", "--repeats", "2", "--pfid-resolution", "64"]
    infd_render = benchmark("infd_render")
    report = infd_render.main([*sizes, "--pfid-images", "1", "--pfid-patches", *ctx.device_args()])
    keys = ("resolution", "mode", "norm", "tiles", "status", "time_s", "peak_bytes", "output_bytes", "reason")
    return {
        "rows": [{k: row.get(k) for k in keys} for row in report["rows"]],
        "notes": [f"peak memory: {report['memory_method']}; paper: {infd_render.PAPER_NOTE}"],
    }


# ------------------------------------------------------------------------------------------ DDPM training
def synthetic_overrides(config: str, images: int = 64) -> list[str]:
    """CLI overrides that swap a config's dataset for ``Synthetic`` at the size its data view reads."""
    spec = yaml.safe_load(Path(config).read_text())
    data = spec["data"]["init_args"]
    view = (data.get("view") or {}).get("init_args") or {}
    size = view.get("max_scale") or view.get("resolution") or view.get("encoder_resolution") or 64
    model = spec["model"]["init_args"]
    channels = model.get("channels", 3)
    dataset = (
        '{"class_path": "rezdiff.data.Synthetic", "init_args": '
        f'{{"num_images": {images}, "resolution": {size}, "channels": {channels}}}}}'
    )
    overrides = [f"--data.init_args.dataset={dataset}", "--data.init_args.num_workers=0"]
    overrides += ["--data.init_args.split_file=null", "--data.init_args.val_fraction=0.125"]
    return overrides


def diffusers_loop(
    network: torch.nn.Module, batch: Any, steps: int, warmup: int, device: torch.device
) -> dict:
    """The same U-Net (``UNet2DModel.from_config``) in a plain diffusers training loop, bf16 autocast:
    noise, ``DDPMScheduler.add_noise``, MSE on the noise, AdamW step, ``EMAModel.step``."""
    from diffusers import DDPMScheduler, UNet2DModel
    from diffusers.training_utils import EMAModel

    torch.manual_seed(0)
    unet = UNet2DModel.from_config(network.net.config).to(device).train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    ema = EMAModel(unet.parameters(), decay=0.9999)
    ema.to(device)
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    images = batch.image

    def step() -> None:
        noise = torch.randn_like(images)
        t = torch.randint(0, 1000, (images.shape[0],), device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            prediction = unet(scheduler.add_noise(images, noise, t), t).sample
        F.mse_loss(prediction.float(), noise).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(unet.parameters())

    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    seconds = (time.perf_counter() - start) / steps
    return {
        "setting": "diffusers loop, bf16-mixed",
        "seconds_per_step": seconds,
        "images_per_second": images.shape[0] / seconds,
    }


def ddpm_throughput(ctx: Context) -> dict[str, Any]:
    """The DDPM U-Net's training step: fp32, bf16-mixed, MFU, the same U-Net in diffusers' loop, then bf16 +
    torch.compile last (its compilation is the slowest item: past the budget, the rows before it are kept)."""
    config = str(REPO / PAPER_CONFIGS["ddpm"][ctx.smoke])
    batch_size = 2 if ctx.smoke else 16
    steps, warmup = (1, 1) if ctx.smoke else (10, 3)
    overrides = [*synthetic_overrides(config), f"--data.init_args.batch_size={batch_size}"]
    notes = [
        f"config {Path(config).name} on Synthetic data, batch {batch_size}, {steps} timed steps after "
        f"{warmup}"
    ]
    train_throughput = benchmark("train_throughput")
    peak = train_throughput.peak_bf16(ctx.device)
    result: dict[str, Any] = {"rows": [], "notes": notes, "peak_bf16_flops": peak, "mfu_goal": 0.40}
    result["speedup_goal"] = 1.3
    rows = result["rows"]

    def rezdiff_step(precision: str, compiled: bool) -> tuple[torch.nn.Module, Any]:
        """Measure one setting on a fresh model; return its network and batch."""
        torch.manual_seed(0)
        model, data = train_throughput.build(config, overrides)
        data.setup("fit")
        batch = next(iter(data.train_dataloader()))
        batch = lightning.fabric.utilities.apply_func.move_data_to_device(batch, ctx.device)
        model = model.to(ctx.device).train()
        row = train_throughput.measure(
            model, batch, precision=precision, compile_model=compiled, steps=steps, warmup=warmup
        )
        rows.append({"setting": f"rezdiff, {precision}" + (", compiled" if compiled else ""), **row})
        return model.network, batch

    rezdiff_step("32", False)
    network, batch = rezdiff_step("bf16-mixed", False)
    try:
        loop = diffusers_loop(network, batch, steps, warmup, ctx.device)
        if peak:  # the same network, so the FLOPs per step rezdiff's row counted
            loop["mfu_vs_bf16_peak"] = rows[0]["train_flops_per_step"] / loop["seconds_per_step"] / peak
        rows.append(loop)
    except ImportError as error:
        loop = None
        notes.append(f"diffusers loop skipped: {one_line(error)}")
    del network, batch
    bf16 = rows[1]
    result["best_bf16_mfu"] = bf16.get("mfu_vs_bf16_peak")
    result["speedup_vs_diffusers"] = bf16["images_per_second"] / loop["images_per_second"] if loop else None
    if ctx.smoke:
        notes.append("torch.compile not run in --smoke")
        return result
    try:
        rezdiff_step("bf16-mixed", True)
    except Exception as error:  # the budget's alarm included: keep what was measured
        raise PartialFailure(f"torch.compile row: {one_line(error)}", result) from error
    best = max(rows[1], rows[-1], key=lambda r: r["images_per_second"])
    result["best_bf16_mfu"] = best.get("mfu_vs_bf16_peak")
    result["speedup_vs_diffusers"] = best["images_per_second"] / loop["images_per_second"] if loop else None
    return result


# ------------------------------------------------------------------------------------------ paper configs
PAPER_CONFIGS = {
    "ddpm": ("configs/ddpm_ffhq256.yaml", "tests/configs/tiny_ddpm.yaml"),
    "dvdp": ("configs/dvdp_ffhq256.yaml", "tests/configs/tiny_dvdp.yaml"),
    "multilevel": ("configs/multilevel_mnist_like.yaml", "tests/configs/tiny_multilevel.yaml"),
    "infty_diff": ("configs/infty_diff_ffhq256.yaml", "tests/configs/tiny_infty_diff.yaml"),
    "infd": ("configs/infd_ffhq.yaml", "tests/configs/tiny_infd.yaml"),
}
"""Family -> (its paper config, the tiny test config that stands in for it in --smoke)."""


class StepTimer(lightning.Callback):
    """Seconds and loss of every training batch (data loading excluded), peak memory from the first one."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.seconds, self.losses, self.start = device, [], [], 0.0

    def on_train_start(self, trainer: Any, module: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
        sync(self.device)
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        sync(self.device)
        self.seconds.append(time.perf_counter() - self.start)
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss) if loss is not None else math.nan)


def fit_steps(
    config: str, steps: int, device: torch.device, vgg_weights: str | None, batch: int | None = None
) -> dict[str, Any]:
    """``steps`` bf16-mixed optimiser steps of a config's model on Synthetic data through Lightning's fit
    (``batch``: the config's batch size unless given)."""
    overrides = synthetic_overrides(config) + ([f"--data.init_args.batch_size={batch}"] if batch else [])
    spec = yaml.safe_load(Path(config).read_text())
    notes = []
    if spec["model"]["init_args"].get("perceptual") == "lpips_vgg":
        if vgg_weights:
            overrides.append(f"--model.init_args.vgg_weights={vgg_weights}")
        else:
            overrides.append("--model.init_args.perceptual=lap_l1")
            notes.append("LPIPS-VGG replaced by lap_l1 (no --vgg-weights): a cheaper step than the paper's")
    model, data = benchmark("train_throughput").build(config, overrides)
    timer = StepTimer(device)
    trainer = lightning.Trainer(
        accelerator=device.type, devices=1, precision="bf16-mixed", max_steps=steps, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer],
        gradient_clip_val=(spec.get("trainer") or {}).get("gradient_clip_val"),
    )  # fmt: skip
    trainer.fit(model, datamodule=data)
    timed = timer.seconds[2:] or timer.seconds
    row = {
        "config": Path(config).name,
        "model": type(model).__name__,
        "batch": data.batch_size if hasattr(data, "batch_size") else None,
        "optimizer_steps": trainer.global_step,
        "batches": len(timer.seconds),
        "s_per_batch": statistics.median(timed) if timed else None,
        "loss_last": timer.losses[-1] if timer.losses else None,
        "loss_finite": bool(timer.losses) and all(math.isfinite(x) for x in timer.losses),
        "notes": "; ".join(notes),
    }
    if device.type == "cuda":
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        row["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return row


def paper_configs(ctx: Context) -> dict[str, Any]:
    """One paper config per family (quickstart configs in --smoke): bf16 steps, step time, memory, loss."""
    steps = 2 if ctx.smoke else 20
    deadline = time.monotonic() + ctx.budget_s
    rows = []
    for family, (paper, quick) in PAPER_CONFIGS.items():
        config = str(REPO / (quick if ctx.smoke else paper))
        if time.monotonic() > deadline:
            rows.append(
                {"family": family, "config": Path(config).name, "status": "skipped", "error": "budget spent"}
            )
            continue
        try:
            rows.append(
                {
                    "family": family,
                    "status": "ok",
                    **fit_steps(config, steps, ctx.device, ctx.vgg_weights, 2 if ctx.smoke else None),
                }
            )
        except Exception as error:  # one config's failure is recorded; the others still run
            rows.append(
                {"family": family, "config": Path(config).name, "status": "failed", "error": one_line(error)}
            )
        finally:
            if ctx.device.type == "cuda":
                torch.cuda.empty_cache()
    failed = [r["family"] for r in rows if r["status"] != "ok" or not r.get("loss_finite")]
    if failed:
        raise PartialFailure(f"not ok or loss not finite: {', '.join(failed)}", {"rows": rows})
    return {
        "rows": rows,
        "notes": [f"{steps} optimiser steps, bf16-mixed, Synthetic data; s/batch: median after 2"],
    }


class PartialFailure(RuntimeError):
    """A failure that still carries results (``partial``) worth recording beside the error."""

    def __init__(self, message: str, partial: dict[str, Any]) -> None:
        super().__init__(message)
        self.partial = partial


def one_line(error: BaseException) -> str:
    """``Type: first line of the message`` (at most 300 characters)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


PARTS = {
    "gpu_tests": (gpu_tests, 0.10),
    "sparse": (sparse, 0.07),
    "infty_diff": (infty_diff, 0.16),
    "dvdp": (dvdp, 0.14),
    "infd": (infd, 0.07),
    "ddpm_throughput": (ddpm_throughput, 0.28),
    "paper_configs": (paper_configs, 0.18),
}
"""Name -> (function, share of ``--budget-s``), in run order."""
