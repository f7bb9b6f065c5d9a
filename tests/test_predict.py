"""``rezdiff predict`` writes one file per seed under the run directory, with the ``predictions:``
settings, and two gloo ranks share the seeds without duplicates or gaps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import rezdiff
from rezdiff.callbacks.predictions import PredictionWriter, parse_seeds
from rezdiff.cli import main
from rezdiff.data.images import load_image
from tests.helpers import REPO, TINY_DDPM, checkout_env, untrained_checkpoint

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return untrained_checkpoint(TINY_DDPM, tmp_path_factory.mktemp("predict") / "ddpm.ckpt")


def _predict(ckpt: Path, root: Path, *extra: str) -> list[str]:
    return ["predict", "--config", str(TINY_DDPM), "--ckpt_path", str(ckpt)] + [
        "--trainer.default_root_dir",
        str(root),
        "--trainer.callbacks=[]",
        "--trainer.logger=false",
        *extra,
    ]


def test_parse_seeds() -> None:
    assert parse_seeds("0-3,10,12-13") == [0, 1, 2, 3, 10, 12, 13]
    assert parse_seeds("7") == [7]
    for bad, message in (("5-2", "ends before it starts"), ("1,1", "twice"), ("a-b", "ranges such as 0-63")):
        with pytest.raises(ValueError, match=message):
            parse_seeds(bad)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        PredictionWriter(batch_size=0)


def test_predict_writes_one_png_and_npz_per_seed_with_the_settings(ckpt: Path, tmp_path: Path) -> None:
    options = "{steps: 2, sampler: ddim, eta: 0.5, spacing: leading}"
    main(
        _predict(ckpt, tmp_path, "--predictions.seeds", "3-5,9", "--predictions.batch_size", "3")
        + [
            "--predictions.npz",
            "true",
            "--predictions.resolution",
            "[8, 12]",
            "--predictions.sample_options",
            options,
        ]
    )
    folder = tmp_path / "predictions" / "8x12"
    seeds = [3, 4, 5, 9]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"seed{s:06d}.png" for s in seeds] + [f"seed{s:06d}.npz" for s in seeds]
    )
    model = rezdiff.load(ckpt)
    settings = {"steps": 2, "sampler": "ddim", "eta": 0.5, "spacing": "leading"}
    expected = torch.cat(
        [model.sample_seeds([3, 4, 5], (8, 12), **settings), model.sample_seeds([9], (8, 12), **settings)]
    )
    for seed, image in zip(seeds, expected, strict=True):
        stored = np.load(folder / f"seed{seed:06d}.npz")
        assert int(stored["seed"]) == seed
        torch.testing.assert_close(torch.from_numpy(stored["image"]), image, rtol=0, atol=1e-5)
        assert (load_image(folder / f"seed{seed:06d}.png") - image).abs().max() <= 1 / 255 + 1e-6
    # the settings took effect: the model's defaults give other images
    default = model.sample_seeds([3, 4, 5], (8, 12), steps=2)
    assert (default - expected[:3]).abs().max() > 1e-3


def test_batch_invariant_predictions_are_bit_identical_whatever_the_batch_size(
    ckpt: Path, tmp_path: Path
) -> None:
    """``predictions.batch_invariant``: the stored float images of seeds 3-5 are bit for bit the same in
    batches of 3 and of 2, and equal ``sample_seeds(..., batch_invariant=True)``."""
    folders = []
    for batch_size in (3, 2):
        root = tmp_path / f"batch{batch_size}"
        extra = ("--predictions.seeds", "3-5", "--predictions.batch_size", str(batch_size))
        extra += ("--predictions.npz", "true", "--predictions.batch_invariant", "true")
        main(_predict(ckpt, root, *extra))
        folders.append(root / "predictions" / "16x16")
    expected = rezdiff.load(ckpt).sample_seeds([3, 4, 5], batch_invariant=True)
    for seed, image in zip((3, 4, 5), expected, strict=True):
        stored = [np.load(folder / f"seed{seed:06d}.npz")["image"] for folder in folders]
        assert np.array_equal(stored[0], stored[1]), seed
        assert torch.equal(torch.from_numpy(stored[0]), image), seed


def test_sample_command_hands_batch_invariant_to_sample_seeds(
    ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rezdiff.models.base import DiffusionModule

    seen: list[bool] = []
    original = DiffusionModule.sample_seeds

    def spy(self: DiffusionModule, seeds: list[int], resolution: object = None, **options: object) -> object:
        seen.append(bool(options.get("batch_invariant")))
        return original(self, seeds, resolution, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(DiffusionModule, "sample_seeds", spy)
    args = ["sample", "--ckpt_path", str(ckpt), "--seeds", "1-3", "--batch_size", "2", "--steps", "2"]
    main([*args, "--out", str(tmp_path / "a"), "--device", "cpu", "--batch_invariant"])
    assert seen == [True, True]
    main([*args, "--out", str(tmp_path / "b"), "--device", "cpu"])
    assert seen == [True, True, False, False]


def test_predict_rejects_settings_the_family_lacks(ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"\['turbo'\] are not settings of DDPM.sample"):
        main(_predict(ckpt, tmp_path, "--predictions.sample_options", "{turbo: 1}"))
    with pytest.raises(SystemExit, match="steps must be a positive integer"):
        main(_predict(ckpt, tmp_path, "--predictions.sample_options", "{steps: 0}"))
    with pytest.raises(SystemExit, match="predictions.seeds: range '5-2' ends before it starts"):
        main(_predict(ckpt, tmp_path, "--predictions.seeds", "5-2"))
    assert not (tmp_path / "predictions").exists()


@pytest.mark.slow
def test_predict_on_two_gloo_processes_shares_the_seeds(ckpt: Path, tmp_path: Path) -> None:
    """7 seeds over 2 ranks in batches of 2: uneven shares, no seed twice (Lightning would pad a training
    sampler with repeats), none missing, every file written once; with ``batch_invariant`` each image is
    bit for bit what one process gives for its seed."""
    audit = tmp_path / "audit"
    callbacks = f"[{{class_path: tests.helpers.SeedAudit, init_args: {{path: {audit}}}}}]"
    args = _predict(ckpt, tmp_path / "run", "--predictions.seeds", "0-6", "--predictions.batch_size", "2")
    args = [a if a != "--trainer.callbacks=[]" else f"--trainer.callbacks={callbacks}" for a in args]
    args += ["--predictions.sample_options", "{steps: 2, eta: 1.0}"]
    args += ["--predictions.npz", "true", "--predictions.batch_invariant", "true"]
    args += ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
    env = checkout_env()
    env["OMP_NUM_THREADS"] = "1"  # as this process (single_thread): the kernels round alike
    result = subprocess.run(
        [sys.executable, "-m", "rezdiff", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [
        line.split(" ", 2)
        for rank in (0, 1)
        for line in Path(f"{audit}-rank{rank}.txt").read_text().splitlines()
    ]
    seeds = [int(seed) for _, seed, _ in lines]
    assert sorted(seeds) == list(range(7)), "a seed generated twice or never"
    assert {rank for rank, _, _ in lines} == {"0", "1"}, "one rank did all the work"
    assert {options for _, _, options in lines} == {'{"eta": 1.0, "steps": 2}'}
    folder = tmp_path / "run" / "predictions" / "16x16"
    written = sorted(p.name for p in folder.iterdir())
    assert written == sorted([f"seed{s:06d}.png" for s in range(7)] + [f"seed{s:06d}.npz" for s in range(7)])
    # batch_invariant: each image is bit for bit what one process gives for its seed alone
    expected = rezdiff.load(ckpt).sample_seeds(range(7), batch_invariant=True, steps=2, eta=1.0)
    for seed in range(7):
        assert torch.equal(torch.from_numpy(np.load(folder / f"seed{seed:06d}.npz")["image"]), expected[seed])


def test_a_sampler_registered_in_a_test_runs_through_sample_and_predict(ckpt: Path, tmp_path: Path) -> None:
    """Issue 16's contract: one function plus one registry line, and ``rezdiff sample --sampler toy`` and
    ``rezdiff predict`` run it, image k from seed k whatever the batch (``--batch-size 1`` vs one batch)."""
    from rezdiff.core.samplers import GAUSSIAN, register_sampler, unregister_sampler
    from tests.core.test_samplers import toy

    register_sampler(GAUSSIAN, "toy", toy)
    try:
        model = rezdiff.load(ckpt)
        expected = model.sample_seeds([5, 6], sampler="toy")
        assert (model.sample_seeds([5, 6]) - expected).abs().max() > 1e-3  # toy is not the default sampler
        height, width = model.native_resolution
        out = tmp_path / "samples"
        args = ["sample", "--ckpt_path", str(ckpt), "--sampler", "toy", "--seeds", "5-6", "--batch_size", "1"]
        main([*args, "--out", str(out), "--device", "cpu"])
        main(
            _predict(
                ckpt,
                tmp_path / "run",
                "--predictions.seeds",
                "5-6",
                "--predictions.sample_options",
                "{sampler: toy}",
            )
        )
        for folder in (out / f"{height}x{width}", tmp_path / "run" / "predictions" / f"{height}x{width}"):
            for seed, image in zip((5, 6), expected, strict=True):
                png = load_image(folder / f"seed{seed:06d}.png")
                assert (png - image).abs().max() <= 1 / 255 + 1e-5, (folder, seed)
    finally:
        unregister_sampler(GAUSSIAN, "toy")
