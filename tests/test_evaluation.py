"""The evaluation harness: sharding, metrics on stand-in models, `rezdiff test` and `rezdiff stats`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rezdiff.cli import main
from rezdiff.core.sampling import seed_generators
from rezdiff.data import Synthetic
from rezdiff.data.datasets import FieldDataset
from rezdiff.evaluation import Evaluate, shard
from tests.helpers import TINY_DDPM, checkout_env


class Blobs(FieldDataset):
    """A cheap dataset: smooth random colour fields, resized bicubically to any resolution."""

    channels = 3

    def __init__(self, num: int = 48) -> None:
        coarse = torch.rand(num, 3, 5, 5, generator=torch.Generator().manual_seed(0)) * 2 - 1
        self.images = F.interpolate(coarse, size=32, mode="bicubic").clamp(-1, 1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Tensor:
        return self.images[index]

    def __repr__(self) -> str:
        return f"Blobs({len(self)})"


class NoisyCopies(nn.Module):
    """A stand-in generator: dataset images plus ``noise`` Gaussian noise, image ``k`` drawn from its seed."""

    def __init__(self, dataset: FieldDataset, noise: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.dataset, self.noise = dataset, noise
        self.image_size = 32

    def sample(self, num, resolution, *, steps=None, seeds=None, use_ema=True) -> Tensor:  # noqa: ANN001
        assert seeds is not None and len(seeds) == num
        images = []
        for generator in seed_generators(seeds):
            clean = self.dataset.render(
                int(torch.randint(0, len(self.dataset), (1,), generator=generator)), resolution
            )
            images.append(clean + self.noise * torch.randn(clean.shape, generator=generator))
        return torch.stack(images).clamp(-1, 1)


class NearestAutoencoder(NoisyCopies):
    """A stand-in autoencoder: reconstruct = slight noise, then nearest resize (exactly scale consistent)."""

    def reconstruct(self, images: Tensor, resolution: tuple[int, int]) -> Tensor:
        noisy = images + 0.05 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
        return F.interpolate(noisy, size=resolution, mode="nearest")


def test_shards_cover_every_index_once_and_round_robin() -> None:
    for num, chunk, world in ((10, 3, 1), (10, 3, 2), (64, 16, 3), (5, 8, 4)):
        seen = [
            i for rank in range(world) for s, n in shard(num, chunk, rank, world) for i in range(s, s + n)
        ]
        assert sorted(seen) == list(range(num))
    assert shard(10, 3, 1, 2) == [(3, 3), (9, 1)]
    with pytest.raises(ValueError):
        shard(10, 3, 2, 2)


def test_generated_images_do_not_depend_on_the_number_of_ranks() -> None:
    dataset = Blobs()
    model = NoisyCopies(dataset, 0.1)
    evaluate = Evaluate(num_samples=10, batch_size=3)
    alone = evaluate.generate(model, (16, 16))
    by_rank = [evaluate.generate(model, (16, 16), rank, 2) for rank in range(2)]
    chunks = {start: None for start in range(0, 10, 3)}
    for rank, images in enumerate(by_rank):
        offset = 0
        for start, count in shard(10, 3, rank, 2):
            chunks[start] = images[offset : offset + count]
            offset += count
    assert torch.equal(alone, torch.cat([chunks[s] for s in sorted(chunks)]))


def test_generated_images_do_not_depend_on_the_batch_size() -> None:
    """Image k is seeded by its own index (issue 16, item 3), so FID cannot move with ``batch_size``."""
    model = NoisyCopies(Blobs(), 0.1)
    images = [Evaluate(num_samples=10, batch_size=size).generate(model, (16, 16)) for size in (3, 4, 10)]
    assert torch.equal(images[0], images[1]) and torch.equal(images[0], images[2])
    assert not torch.equal(images[0][0], images[0][1])


def test_metrics_rank_models_by_quality_at_every_resolution(tmp_path: Path) -> None:
    dataset = Blobs()
    evaluate = Evaluate(
        resolutions=[16, 32],
        metrics=["fid", "kid", "pfid", "swd"],
        num_samples=48,
        batch_size=16,
        patch_size=8,
        kid_subsets=10,
        stats_dir=str(tmp_path),
    )
    results = [evaluate.run(NoisyCopies(dataset, noise), dataset) for noise in (0.0, 0.2, 0.5)]
    assert set(results[0]) == {
        f"{m}@{r}" for m in ("fid", "kid", "kid_std", "pfid8", "swd") for r in (16, 32)
    }
    for key in ("fid@16", "fid@32", "kid@32", "pfid8@32", "swd@16", "swd@32"):
        values = [r[key] for r in results]
        assert values[0] < values[1] < values[2], key  # monotone in the added noise
    assert evaluate.cache_misses == 4 and evaluate.cache_hits == 8  # 2 resolutions x (full, crop)


def test_reconstruction_metrics_need_reconstruct_and_match_direct_values(tmp_path: Path) -> None:
    dataset = Blobs(8)
    evaluate = Evaluate(
        resolutions=[16], metrics=["psnr", "ssim", "scale_consistency"], stats_dir=str(tmp_path)
    )
    with pytest.raises(ValueError, match="reconstruct"):
        evaluate.run(NoisyCopies(dataset, 0.0), dataset)
    model = NearestAutoencoder(dataset, 0.0)
    results = evaluate.run(model, dataset)
    reference = torch.stack([dataset.render(i, 16) for i in range(8)])
    recon = model.reconstruct(reference, (16, 16))
    mse = (((recon + 1) / 2).clamp(0, 1) - (reference + 1) / 2).square().flatten(1).mean(1)
    assert results["psnr@16"] == pytest.approx(float((10 * torch.log10(1 / mse)).mean()), rel=1e-5)
    assert 0.5 < results["ssim@16"] < 1.0
    assert results["scale_psnr@16"] > 150 and results["scale_l1@16"] < 1e-6  # nearest x2 then box: exact


def test_rezdiff_test_writes_metrics_json_and_stats_are_cached(
    tmp_path: Path, fit_tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    fit_tiny("--trainer.max_epochs", "1", "--trainer.callbacks", "[]")
    root = tmp_path / "run"
    renders = []
    original = Synthetic.render
    monkeypatch.setattr(Synthetic, "render", lambda self, i, r: renders.append(r) or original(self, i, r))
    evaluate = [
        "--evaluate.resolutions=[16, 32]",
        "--evaluate.metrics=[fid, kid, swd]",
        "--evaluate.num_samples=12",
        "--evaluate.kid_subsets=10",
        f"--evaluate.stats_dir={tmp_path / 'stats'}",
    ]
    files = main(["stats", "--config", str(TINY_DDPM), *evaluate])
    assert len(files) == 2 and all(f.is_file() for f in files)
    first = len(renders)
    assert first == 2 * 40  # every image of the dataset at both resolutions
    stamps = [f.stat().st_mtime_ns for f in files]
    assert main(["stats", "--config", str(TINY_DDPM), *evaluate]) == files
    assert len(renders) == first and [f.stat().st_mtime_ns for f in files] == stamps  # nothing recomputed

    ckpt = str(root / "checkpoints" / "last.ckpt")
    args = ["test", "--config", str(TINY_DDPM), "--trainer.default_root_dir", str(root), "--ckpt_path", ckpt]
    main([*args, "--trainer.callbacks", "[]", *evaluate])
    report = json.loads((root / "metrics.json").read_text())
    metrics = report["metrics"]
    assert {"fid@16", "fid@32", "kid@16", "kid@32", "swd@16", "swd@32", "test/loss"} <= set(metrics)
    assert all(value == value and value >= -1e-3 for value in metrics.values())  # finite, not negative
    assert report["resolutions"] == ["16", "32"] and report["settings"]["num_samples"] == 12
    assert report["model"].endswith("DDPM") and report["checkpoint"] == ckpt
    # FID/KID reference features came from the cache: the only renders are the 8 images of the test-loss
    # split and SWD's real images (12 per size)
    assert len(renders) == first + 8 + 2 * 12


def test_missing_inception_weights_stop_rezdiff_test_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        main(["test", "--config", str(TINY_DDPM), "--evaluate.feature", "inception"])
    assert "inception-2015-12-05.pt" in str(info.value.code)


@pytest.mark.slow
def test_ddp_evaluation_on_two_cpu_processes_equals_one_process(tmp_path: Path, fit_tiny) -> None:
    """Two gloo ranks each sample their share; gathered features give the single-process figures."""
    fit_tiny("--trainer.max_epochs", "1", "--trainer.callbacks", "[]")
    ckpt = str(tmp_path / "run" / "checkpoints" / "last.ckpt")
    evaluate = [
        "--evaluate.resolutions=[16, 32]",
        "--evaluate.metrics=[fid, kid, pfid, swd]",
        "--evaluate.patch_size=8",
        "--evaluate.num_samples=20",
        "--evaluate.batch_size=4",
        f"--evaluate.stats_dir={tmp_path / 'stats'}",
    ]
    base = ["test", "--config", str(TINY_DDPM), "--ckpt_path", ckpt, "--trainer.callbacks", "[]", *evaluate]
    main([*base, "--trainer.default_root_dir", str(tmp_path / "one")])
    env = checkout_env()
    result = subprocess.run(
        [sys.executable, "-m", "rezdiff", *base, "--trainer.default_root_dir", str(tmp_path / "two")]
        + ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())["metrics"]
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["world_size"] == 2
    for key, value in one.items():
        if not key.startswith("test/"):
            assert two["metrics"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
