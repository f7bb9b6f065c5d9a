"""The evaluation harness's extension points: metrics registered from outside reach ``metrics.json``,
sampler settings reach ``model.sample``, and every family names its native resolution one way."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml
from torch import Tensor, nn

from rezdiff.callbacks import SampleGrid
from rezdiff.cli import main
from rezdiff.data import Synthetic
from rezdiff.evaluation import METRICS, Evaluate, SampleMetric, SampleSet, register_metric
from rezdiff.evaluation.sharding import Gather
from rezdiff.loading import build
from rezdiff.models import DiffusionModule
from rezdiff.sweep import Sweep, collect
from tests.helpers import REPO, TINY_DDPM

TINY = REPO / "tests" / "configs"


class BrightnessGap(SampleMetric):
    """A metric written outside rezdiff: mean brightness of the first ``count`` generated images minus that
    of the first ``count`` reference images, and the reference mean alone (an exact oracle for the test)."""

    name, needs = "brightness", frozenset({"generated", "reference"})

    def __init__(self, count: int = 4) -> None:
        self.count = count

    def options(self) -> dict[str, Any]:
        return {"count": self.count}

    def reset(self) -> None:
        self.result: dict[str, float] = {}

    def update(self, samples: SampleSet) -> None:
        real = samples.reference_images(self.count).double().mean()
        fake = samples.generated_images(self.count).double().mean()
        self.result = {"brightness_gap": float(fake - real), "reference_brightness": float(real)}

    def compute(self, gather: Gather) -> dict[str, float]:
        return dict(self.result)


@pytest.fixture
def registry() -> Iterator[None]:
    """Leave the metric registry as it was."""
    saved = dict(METRICS)
    yield
    METRICS.clear()
    METRICS.update(saved)


def test_a_metric_registered_here_reaches_metrics_json_through_rezdiff_test(
    tmp_path: Path, registry: None
) -> None:
    register_metric(BrightnessGap)
    root = tmp_path / "run"
    main(
        ["test", "--config", str(TINY_DDPM), "--trainer.default_root_dir", str(root)]
        + ["--trainer.callbacks=[]", "--evaluate.metrics=[brightness, swd]", "--evaluate.num_samples=4"]
        + ["--evaluate.metric_options={brightness: {count: 3}}", "--evaluate.sample={steps: 2}"]
    )
    report = json.loads((root / "metrics.json").read_text())
    # the reference images are the first three of the dataset, at the model's native 16x16
    dataset = Synthetic(num_images=40, resolution=16)
    expected = torch.stack([dataset.render(i, (16, 16)) for i in range(3)]).double().mean()
    assert report["metrics"]["reference_brightness@16"] == pytest.approx(float(expected), abs=1e-9)
    assert {"brightness_gap@16", "swd@16", "test/loss"} <= set(report["metrics"])
    assert report["metric_keys"]["brightness"] == ["brightness_gap@16", "reference_brightness@16"]
    assert report["settings"]["metric_options"]["brightness"] == {"count": 3}
    assert report["settings"]["sample"] == {"steps": 2}


def test_registry_refuses_name_clashes_and_foreign_needs(registry: None) -> None:
    class Other(BrightnessGap):
        name = "fid"

    with pytest.raises(ValueError, match="taken by FID"):
        register_metric(Other)

    class Greedy(BrightnessGap):
        name, needs = "greedy", frozenset({"reconstruction"})

    with pytest.raises(ValueError, match="subset of"):
        register_metric(Greedy)
    with pytest.raises(ValueError, match="unknown metrics \\['brightness'\\]"):
        Evaluate(metrics=["brightness"])


class Recorder(nn.Module):
    """A stand-in family whose ``sample`` records its keyword arguments and returns constant images."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.calls: list[dict[str, Any]] = []

    def sample(
        self,
        num: int,
        resolution: tuple[int, int],
        *,
        steps: int | None = None,
        seeds: list[int] | None = None,
        use_ema: bool = True,
        sampler: str | None = None,
        eta: float | None = None,
    ) -> Tensor:
        self.calls.append(dict(num=num, steps=steps, use_ema=use_ema, sampler=sampler, eta=eta))
        assert seeds is not None and len(seeds) == num  # image k from its own seed
        images = [torch.rand((3, *resolution), generator=torch.Generator().manual_seed(s)) for s in seeds]
        return torch.stack(images) * 2 - 1


def test_sampler_settings_reach_every_sample_call_and_bad_ones_are_named(registry: None) -> None:
    register_metric(BrightnessGap)
    dataset = Synthetic(num_images=6, resolution=16)
    evaluate = Evaluate(
        resolutions=[16, 8], metrics=["brightness"], num_samples=5, batch_size=2, steps=3, use_ema=False,
        sample={"sampler": "ddpm", "eta": 0.5},
    )  # fmt: skip
    model = Recorder()
    batches: list[list[int]] = []  # every generated image comes from Pipeline.generate_batch
    one_call = evaluate.pipeline.generate_batch
    evaluate.pipeline.generate_batch = lambda m, p, r: batches.append(list(p)) or one_call(m, p, r)  # type: ignore[method-assign]
    evaluate.run(model, dataset)
    assert batches == [[0, 1], [2, 3], [4]] * 2
    settings = dict(steps=3, use_ema=False, sampler="ddpm", eta=0.5)
    assert model.calls == [dict(num=n, **settings) for n in (2, 2, 1)] * 2  # two resolutions, three chunks
    with pytest.raises(ValueError, match=r"Recorder.sample\(\) takes no \['guidance'\]"):
        Evaluate(resolutions=[16], metrics=["brightness"], sample={"guidance": 2.0}).run(model, dataset)
    with pytest.raises(ValueError, match="both set"):
        Evaluate(steps=3, sample={"steps": 2})
    with pytest.raises(ValueError, match=r"cannot set \['generator'\]"):
        Evaluate(sample={"generator": 0})


def test_deprecated_metric_keys_warn_once_and_become_metric_options() -> None:
    with pytest.warns(FutureWarning) as caught:
        evaluate = Evaluate(kid_subsets=7, swd_max_images=9, metric_options={"kid": {"subset_size": 50}})
    assert [str(w.message) for w in caught] == [
        "evaluate.kid_subsets is deprecated: set evaluate.metric_options: {kid: {subsets: 7}}",
        "evaluate.swd_max_images is deprecated: set evaluate.metric_options: {swd: {max_images: 9}}",
    ]
    assert evaluate.metric_options == {"kid": {"subsets": 7, "subset_size": 50}, "swd": {"max_images": 9}}
    options = [m.options() for m in evaluate.build_metrics(None)]  # the defaults: fid, kid, swd
    assert options == [{}, {"subsets": 7, "subset_size": 50}, {"max_images": 9}]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Evaluate(metric_options={"kid": {"subsets": 7}})  # the new spelling is silent
    with pytest.raises(ValueError, match="both set"), pytest.warns(FutureWarning):
        Evaluate(kid_subsets=7, metric_options={"kid": {"subsets": 8}})
    with pytest.raises(ValueError, match=r"metric_options.swd: .*'patches'"):
        Evaluate(metric_options={"swd": {"patches": 3}})
    with pytest.raises(ValueError, match=r"unknown metrics \['lpips'\]"):
        Evaluate(metric_options={"lpips": {}})


def _tiny(config: str, **init_args: Any) -> DiffusionModule:
    """The untrained model of ``tests/configs/<config>``, with ``init_args`` added."""
    model = yaml.safe_load((TINY / config).read_text())["model"]
    return build(model["class_path"], {**model["init_args"], **init_args})


def _seven_models() -> list[tuple[DiffusionModule, int]]:
    """One untrained tiny model of every class, with the size its own constructor argument names."""
    ddpm, dvdp, multilevel = _tiny("tiny_ddpm.yaml"), _tiny("tiny_dvdp.yaml"), _tiny("tiny_multilevel.yaml")
    infty_diff = _tiny("tiny_infty_diff.yaml")
    autoencoder_args = {**yaml.safe_load((TINY / "tiny_infty_diff.yaml").read_text())["model"]["init_args"]}
    stage1 = {"class_path": "rezdiff.models.InftyDiff", "init_args": {**autoencoder_args, "latent_dim": 8}}
    infty_latent = _tiny("tiny_infty_diff_latent.yaml", stage1=stage1)
    autoencoder = _tiny("tiny_infd.yaml", encoder_resolution=8)
    config = yaml.safe_load((TINY / "tiny_infd.yaml").read_text())["model"]
    config["init_args"]["encoder_resolution"] = 8
    infd = _tiny("tiny_infd_latent.yaml", autoencoder_config=config)
    return [
        (ddpm, ddpm.image_size),
        (dvdp, dvdp.image_size),
        (multilevel, multilevel.image_size),
        (infty_diff, infty_diff.train_resolution),
        (infty_latent, infty_latent.stage1.train_resolution),
        (autoencoder, autoencoder.encoder_resolution),
        (infd, infd.encoder_resolution),
    ]


def test_every_family_evaluates_and_samples_at_its_native_resolution(single_thread: None) -> None:
    models = _seven_models()
    assert len({type(model) for model, _ in models}) == 7
    for model, size in models:
        assert model.native_resolution == (size, size), type(model).__name__
        assert Evaluate().model_resolutions(model) == [(size, size)], type(model).__name__
        if not callable(getattr(model, "reconstruct", None)):  # sample() defaults to the same size
            images = model.sample(1, steps=2, generator=torch.Generator().manual_seed(0))
            assert tuple(images.shape[-2:]) == (size, size), type(model).__name__
    assert {size for _, size in models} == {8, 16, 32}  # the check tells the three spellings apart


@pytest.mark.parametrize(
    ("config", "metric", "kind"),
    [("tiny_infty_diff.yaml", "fid", "full"), ("tiny_infd.yaml", "pfid", "crop8")],
)
def test_rezdiff_stats_works_for_infty_diff_and_infd_stage1(
    tmp_path: Path, config: str, metric: str, kind: str
) -> None:
    args = [f"--evaluate.metrics=[{metric}]", "--evaluate.patch_size=8", "--evaluate.num_reference=4"]
    files = main(["stats", "--config", str(TINY / config), f"--evaluate.stats_dir={tmp_path}", *args])
    assert [f.name.split("_")[:2] for f in files] == [[kind, "16"]]  # the model's native 16x16
    assert torch.load(files[0], weights_only=True)["features"].shape[0] == 4


def test_sweep_collects_every_key_a_chosen_metric_wrote(tmp_path: Path) -> None:
    """``collect: [kid, pfid]`` keeps ``kid_std@R`` and ``pfid8@R`` (keys whose name is not the metric's)."""
    sweep = Sweep.from_spec({"configs": [str(TINY_DDPM)], "collect": ["kid", "pfid"]}, out=tmp_path)
    (run,) = sweep.runs
    run.directory.mkdir(parents=True)
    metrics = {"fid@16": 3.0, "kid@16": 0.1, "kid_std@16": 0.01, "pfid8@16": 2.0, "test/loss": 0.5}
    keys = {"fid": ["fid@16"], "kid": ["kid@16", "kid_std@16"], "pfid": ["pfid8@16"]}
    (run.directory / "metrics.json").write_text(json.dumps({"metrics": metrics, "metric_keys": keys}))
    (row,) = collect(sweep)
    assert {key for key in row if "@" in key or "/" in key} == {
        "kid@16",
        "kid_std@16",
        "pfid8@16",
        "test/loss",
    }


def test_sample_grid_defaults_to_the_native_resolution(tmp_path: Path) -> None:
    class Wide(nn.Module):
        native_resolution = (8, 12)
        device = torch.device("cpu")

        def sample(self, num: int, resolution: Any, **options: Any) -> Tensor:
            assert resolution == (8, 12)
            return torch.zeros(num, 3, *resolution)

    trainer = SimpleNamespace(
        log_dir=str(tmp_path), default_root_dir=str(tmp_path), is_global_zero=True, current_epoch=0,
        global_step=5, loggers=[],
    )  # fmt: skip
    SampleGrid(num=2).on_train_end(trainer, Wide())  # type: ignore[arg-type]
    assert [p.name for p in (tmp_path / "samples").iterdir()] == ["epoch=0-step=5-res=8x12.png"]
