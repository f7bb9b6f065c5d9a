"""The evaluation options of the photographs sweep: the 1x + bicubic baseline (``upsample_from``), a
reference dataset other than the training data (``reference_dataset``), several patches per image
(``crops_per_image``), and the sweep file that uses them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn

from rezdiff.cli import main
from rezdiff.data import Photographs, Synthetic
from rezdiff.data.datasets import stable_seed
from rezdiff.evaluation import METRICS, Evaluate, SampleSet, register_metric
from rezdiff.evaluation.metric import _Result
from rezdiff.evaluation.pipeline import Pipeline, Settings
from rezdiff.metrics.fid import random_crops
from rezdiff.sweep import Sweep, prepare
from tests.helpers import REPO, TINY_DDPM

SWEEP = REPO / "configs" / "sweeps" / "families_photographs.yaml"


class Capture(_Result):
    """Keeps the generated and the first two reference images of every resolution it sees (by key)."""

    name, needs = "capture", frozenset({"generated", "reference"})
    seen: dict[str, tuple[Tensor, Tensor]] = {}

    def update(self, samples: SampleSet) -> None:
        tag = f"{samples.resolution[0]}" + (f"_up{samples.source[0]}" if samples.source else "")
        generated = samples.generated_images(samples.num_samples)
        Capture.seen[tag] = (generated, samples.reference_images(2))
        self.result = {"reference_mean": float(samples.reference_images(2).double().mean())}


class SignNoise(nn.Module):
    """A stand-in family: image ``k`` is ``+-1`` pixels drawn from its own seed (bicubic overshoots them)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.calls: list[tuple[int, int]] = []

    def sample(self, num: int, resolution: tuple[int, int], *, seeds: list[int], **_: Any) -> Tensor:
        self.calls.append(tuple(resolution))  # type: ignore[arg-type]
        return torch.stack([image(s, resolution) for s in seeds])


def image(seed: int, resolution: tuple[int, int]) -> Tensor:
    """The stand-in's image for ``seed``: ``+-1`` pixels."""
    return torch.randint(0, 2, (3, *resolution), generator=torch.Generator().manual_seed(seed)) * 2.0 - 1


@pytest.fixture
def capture() -> Iterator[None]:
    """Register :class:`Capture` and leave the metric registry as it was."""
    saved = dict(METRICS)
    Capture.seen = {}
    register_metric(Capture)
    yield
    METRICS.clear()
    METRICS.update(saved)


def test_upsample_from_scores_the_1x_samples_upsampled_bicubically_and_clamped(capture: None) -> None:
    dataset = Synthetic(num_images=6, resolution=16)
    evaluate = Evaluate(
        resolutions=[8, 16], metrics=["capture"], num_samples=3, batch_size=2, upsample_from=8, seed=5
    )
    model = SignNoise()
    results = evaluate.run(model, dataset)
    assert set(results) == {"reference_mean@8", "reference_mean@16", "reference_mean_up8@16"}
    assert evaluate.metric_keys["capture"] == [
        "reference_mean@8",
        "reference_mean@16",
        "reference_mean_up8@16",
    ]
    low = torch.stack([image(stable_seed(5, 8, 8, k), (8, 8)) for k in range(3)])
    expected = F.interpolate(low, size=(16, 16), mode="bicubic", align_corners=False)
    assert expected.abs().max() > 1.05  # the oracle overshoots, so the clamp is tested too
    assert torch.equal(Capture.seen["16_up8"][0], expected.clamp(-1, 1))
    assert torch.equal(Capture.seen["8"][0], low)  # the baseline's source images are the 1x samples
    assert torch.equal(Capture.seen["16_up8"][1], Capture.seen["16"][1])  # against the 2x references
    assert model.calls.count((8, 8)) == 2  # 3 images in chunks of 2, generated once: reused for 16_up8
    assert (16, 16) in model.calls


def test_upsample_from_alone_generates_its_source_and_bad_values_are_named(capture: None) -> None:
    dataset = Synthetic(num_images=6, resolution=16)
    model = SignNoise()
    Evaluate(resolutions=[16], metrics=["capture"], num_samples=2, upsample_from=8).run(model, dataset)
    expected = F.interpolate(
        torch.stack([image(stable_seed(0, 8, 8, k), (8, 8)) for k in range(2)]), 16, mode="bicubic"
    )
    assert torch.equal(Capture.seen["16_up8"][0], expected.clamp(-1, 1))
    with pytest.raises(ValueError, match="upsample_from=16 is not below any of evaluate.resolutions"):
        Evaluate(resolutions=[8, 16], metrics=["capture"], num_samples=2, upsample_from=16).run(
            model, dataset
        )
    with pytest.raises(ValueError, match="upsample_from is a resolution >= 1"):
        Evaluate(upsample_from=0)


def test_reference_dataset_replaces_the_training_data_as_reference_through_rezdiff_test(
    tmp_path: Path, capture: None
) -> None:
    root = tmp_path / "run"
    reference = "{class_path: rezdiff.data.Photographs, init_args: {split: held_out}}"
    main(
        ["test", "--config", str(TINY_DDPM), "--trainer.default_root_dir", str(root)]
        + ["--trainer.callbacks=[]", "--evaluate.metrics=[capture]", "--evaluate.num_samples=2"]
        + ["--evaluate.sample={steps: 2}", f"--evaluate.reference_dataset={reference}"]
    )
    report = json.loads((root / "metrics.json").read_text())
    held_out = Photographs(split="held_out")
    expected = torch.stack([held_out.render(i, (16, 16)) for i in range(2)])
    assert torch.equal(Capture.seen["16"][1], expected)
    assert report["metrics"]["reference_mean@16"] == pytest.approx(float(expected.double().mean()), abs=1e-9)
    assert report["settings"]["reference_dataset"] == repr(held_out)


def test_reference_dataset_with_other_channels_is_refused() -> None:
    evaluate = Evaluate(reference_dataset=Photographs(split="held_out", channels=1))
    with pytest.raises(ValueError, match="reference_dataset has 1 channel"):
        evaluate.reference_source(Synthetic(num_images=4, resolution=8), None)


def test_crops_per_image_gives_k_crops_per_image_and_one_keeps_the_single_crop(tmp_path: Path) -> None:
    images = torch.randn(5, 3, 12, 12)
    one = Pipeline(Settings(patch_size=4, stats_dir=tmp_path))
    many = Pipeline(Settings(patch_size=4, crops_per_image=3, stats_dir=tmp_path))
    single, triple = (
        one.crops(images, range(5), (12, 12), tag=0),
        many.crops(images, range(5), (12, 12), tag=0),
    )
    assert single.shape == (5, 3, 4, 4) and triple.shape == (15, 3, 4, 4)
    keys = (0, 0, 12, 12, 4)  # one crop per image: the crops (and cache keys) of before the option
    generators = [torch.Generator().manual_seed(stable_seed(*keys, p)) for p in range(5)]
    pairs = zip(images, generators, strict=True)
    assert torch.equal(single, torch.cat([random_crops(im[None], 4, g) for im, g in pairs]))
    windows = images.unfold(2, 4, 1).unfold(3, 4, 1)  # [N, C, 9, 9, 4, 4]: every 4x4 window
    for k, crop in enumerate(triple):  # crop k is a window of image k // 3
        assert (windows[k // 3] - crop[:, None, None]).abs().amax(dim=(0, 3, 4)).min() == 0
    assert len({tuple(c.flatten()[:4].tolist()) for c in triple[:3]}) > 1  # not one crop three times
    assert many.crop_positions([2, 0]).tolist() == [6, 7, 8, 0, 1, 2]
    dataset = Synthetic(num_images=5, resolution=12)
    features = [
        Pipeline(
            Settings(patch_size=4, crops_per_image=3, batch_size=b, stats_dir=tmp_path / str(b))
        ).reference_features(dataset, list(range(5)), (12, 12), "crop")
        for b in (2, 5)
    ]
    assert features[0].shape == (15, features[0].shape[1])
    torch.testing.assert_close(features[0], features[1])  # independent of the chunking
    with pytest.raises(ValueError, match="crops_per_image must be >= 1"):
        Settings(crops_per_image=0)


def test_photographs_sweep_expands_to_every_family_resolution_and_baseline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The five families train at 32² for the same steps on the training regions and are scored at 32² and
    64² (with their own 1x + bicubic) against the held-out regions; DDPM also trains and samples at 64²."""
    monkeypatch.chdir(REPO)
    sweep = Sweep.load(SWEEP, out=tmp_path / "sweep")
    assert [run.params["family"] for run in sweep.runs] == [
        "ddpm", "dvdp", "multilevel", "infty_diff", "infd", "ddpm64"
    ]  # fmt: skip
    assert [stage.name for stage in sweep.stages] == ["_prepare/infd_stage1"]
    configs = {}
    for run in [*sweep.stages, *sweep.runs]:
        files = prepare(run)
        with pytest.raises(SystemExit):
            main(["fit", *[a for f in files for a in ("-c", str(f))], "--print_config"])
        configs[run.params.get("family", "stage1")] = yaml.safe_load(capsys.readouterr().out)
    stage1 = configs.pop("stage1")
    assert stage1["data"]["init_args"]["view"]["init_args"]["max_scale"] == 32  # no view above 1x
    assert stage1["data"]["init_args"]["dataset"]["init_args"]["split"] == "train"
    for family, config in configs.items():
        data, evaluate = config["data"]["init_args"], config["evaluate"]
        assert data["dataset"] == {
            "class_path": "rezdiff.data.Photographs",
            "init_args": {"split": "train", "channels": 3},
        }
        assert config["trainer"]["max_steps"] == 150 and data["batch_size"] == 8, family
        assert evaluate["reference_dataset"]["init_args"]["split"] == "held_out", family
        assert evaluate["metrics"] == ["pfid", "swd"] and evaluate["crops_per_image"] == 16
        view = data["view"].get("init_args") or {}  # INFD's CachedLatents: stage 1's 32² encoder
        if family == "ddpm64":
            assert view["resolution"] == 64 and config["model"]["init_args"]["image_size"] == 64
            assert evaluate["resolutions"] == [64] and evaluate["upsample_from"] is None
            continue
        trained = view.get("resolution") or max(view.get("resolutions") or [32])
        assert trained == 32, family
        assert evaluate["resolutions"][:2] == [32, 64] and evaluate["upsample_from"] == 32, family
        assert data["hflip"] == (0.0 if family == "infd" else 0.5), family
