"""``Evaluate``: the ``evaluate:`` settings, the notebook API and the callback ``rezdiff test`` runs.

The work is elsewhere: :mod:`~rezdiff.evaluation.pipeline` makes images and features, the metric objects
of :mod:`~rezdiff.evaluation.metric` turn them into figures; this class builds both from its settings,
loops over resolutions and writes the report.

(Over ~400 lines: the typed constructor is the ``evaluate:`` schema, and its docstring documents every
setting where jsonargparse and ``--print_config`` users read it.)
"""

from __future__ import annotations

import inspect
import json
import time
import warnings
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from rezdiff.data.coords import Resolution, as_hw
from rezdiff.data.datasets import FieldDataset
from rezdiff.evaluation.metric import METRICS, Metric, ReconstructionMetric, SampleMetric
from rezdiff.evaluation.pipeline import Pipeline, Reference, SampleSet, Settings, default_stats_dir
from rezdiff.evaluation.sharding import Gather, gather_rows, identity, label
from rezdiff.metrics.features import FeatureName

#: ``model.sample`` arguments the harness sets itself.
_OWN_SAMPLE_ARGS = ("num", "resolution", "generator", "seeds")
#: Old top-level keys, now per-metric options: key -> (metric, option).
_DEPRECATED = {"kid_subsets": ("kid", "subsets"), "kid_subset_size": ("kid", "subset_size")}
_DEPRECATED |= {"swd_max_images": ("swd", "max_images")}


class Evaluate(pl.Callback):
    """Evaluation settings, and the callback that ``rezdiff test`` runs after the test loss.

    ``resolutions``: where to evaluate (default: the model's ``native_resolution``). ``metrics``: names of
    registered metrics (built in: fid, kid, pfid, swd, psnr, ssim, scale_consistency; the last three need
    ``model.reconstruct``); by default psnr and ssim for models with ``reconstruct``, fid, kid and swd
    otherwise; ``[]`` turns the evaluation off. ``metric_options``: each metric's own settings, e.g.
    ``{kid: {subsets: 100, subset_size: 1000}, swd: {max_images: 512}}``. ``num_samples`` images are
    generated per resolution by ``model.sample(..., steps=steps, use_ema=use_ema, **sample)`` (``sample``:
    the family's sampler settings, e.g. ``{sampler: ddim, eta: 0}``; unset ones keep the checkpoint's)
    and compared with ``num_reference`` images of the ``reference`` split (all of it when None) rendered
    at that resolution; ``reference_dataset`` (a dataset, e.g. ``Photographs(split=held_out)``) replaces
    the data module's dataset as the reference, all of it (``reference`` then does not apply).
    ``patch_size``: the crop of patch metrics (pfid), ``crops_per_image`` of them per image (more patches
    when the reference set is small). ``upsample_from`` (a resolution R0): at every evaluated resolution
    above R0 the sample metrics are also computed on the images generated at R0 (the same images as at R0,
    reused when R0 is evaluated too) upsampled bicubically, under keys ``<key>_up<R0>@<R>``: the
    "1x + bicubic" baseline from the same run. ``feature``: ``random_conv``
    (weights-free; FIDs comparable within rezdiff only), ``inception`` (needs ``feature_path`` =
    inception-2015-12-05.pt) or ``torchscript``. Results go to ``<run dir>/<output>`` and the loggers
    (``eval/<key>``); the first ``save_grid`` generated images of each resolution to
    ``<run dir>/samples/eval_<R>.png``. ``kid_subsets``, ``kid_subset_size`` and ``swd_max_images`` are
    deprecated spellings of ``metric_options``.
    """

    def __init__(
        self,
        resolutions: list[int] | None = None,
        metrics: Sequence[str] | None = None,
        metric_options: dict[str, dict[str, Any]] | None = None,
        num_samples: int = 256,
        batch_size: int = 64,
        steps: int | None = None,
        use_ema: bool = True,
        sample: dict[str, Any] | None = None,
        seed: int = 0,
        feature: FeatureName = "random_conv",
        feature_path: str | None = None,
        feature_seed: int = 0,
        reference: Reference = "all",
        num_reference: int | None = None,
        patch_size: int = 32,
        crops_per_image: int = 1,
        reference_dataset: FieldDataset | None = None,
        upsample_from: int | None = None,
        stats_dir: str | None = None,
        output: str = "metrics.json",
        save_grid: int = 16,
        kid_subsets: int | None = None,
        kid_subset_size: int | None = None,
        swd_max_images: int | None = None,
    ) -> None:
        super().__init__()
        unknown = sorted(set(metrics or ()) - set(METRICS))
        if unknown:
            raise ValueError(
                f"unknown metrics {unknown}; choose from {sorted(METRICS)} or register_metric yours"
            )
        if num_samples < 2 or batch_size < 1:
            raise ValueError("num_samples must be >= 2 and batch_size >= 1")
        if upsample_from is not None and upsample_from < 1:
            raise ValueError(f"evaluate.upsample_from is a resolution >= 1 (or null), got {upsample_from}")
        self.reference_dataset, self.upsample_from = reference_dataset, upsample_from
        self.resolutions = resolutions
        self.metrics = None if metrics is None else list(metrics)
        self.metric_options = _metric_options(
            metric_options or {},
            {
                "kid_subsets": kid_subsets,
                "kid_subset_size": kid_subset_size,
                "swd_max_images": swd_max_images,
            },
        )
        sample_args = _sample_args(steps, use_ema, sample or {})
        self.steps, self.use_ema, self.sample, self.seed = steps, use_ema, dict(sample or {}), seed
        self.output, self.save_grid = output, save_grid
        self.pipeline = Pipeline(
            Settings(
                num_samples=num_samples,
                batch_size=batch_size,
                seed=seed,
                sample=sample_args,
                feature=feature,
                feature_path=feature_path,
                feature_seed=feature_seed,
                reference=reference,
                num_reference=num_reference,
                patch_size=patch_size,
                crops_per_image=crops_per_image,
                stats_dir=Path(stats_dir) if stats_dir else default_stats_dir(),
            )
        )
        self._active: list[str] = []
        self.grid_dir: Path | None = None
        self.results: dict[str, float] = {}
        self.metric_keys: dict[str, list[str]] = {}  # metric name -> its keys in results (for sweeps)
        self.seconds: float | None = None

    # ------------------------------------------------------------------ settings
    @property
    def settings(self) -> Settings:
        """What the pipeline was built with."""
        return self.pipeline.settings

    @property
    def stats_dir(self) -> Path:
        """Where reference features are cached."""
        return self.settings.stats_dir

    @property
    def cache_hits(self) -> int:
        """Reference-feature sets found in the cache so far."""
        return self.pipeline.cache_hits

    @property
    def cache_misses(self) -> int:
        """Reference-feature sets computed so far."""
        return self.pipeline.cache_misses

    @property
    def extractor(self) -> nn.Module:
        """The feature extractor of FID-like metrics."""
        return self.pipeline.extractor

    def crops(
        self, images: Tensor, positions: Sequence[int], resolution: tuple[int, int], tag: int
    ) -> Tensor:
        """One seeded ``patch_size``² crop per image (see :meth:`Pipeline.crops`)."""
        return self.pipeline.crops(images, positions, resolution, tag)

    def generate(
        self, model: nn.Module, resolution: tuple[int, int], rank: int = 0, world: int = 1, channels: int = 3
    ) -> Tensor:
        """This rank's share of the ``num_samples`` generated images (see :meth:`Pipeline.generate`)."""
        self._check_sample_args(model)
        return self.pipeline.generate(model, resolution, rank, world, channels)

    def metrics_for(self, model: nn.Module | None) -> list[str]:
        """The configured metrics; by default psnr and ssim for autoencoders (models with ``reconstruct``),
        fid, kid and swd for everything else."""
        if self.metrics is not None:
            return list(self.metrics)
        if model is not None and callable(getattr(model, "reconstruct", None)):
            return ["psnr", "ssim"]
        return ["fid", "kid", "swd"]

    def build_metrics(self, model: nn.Module | None) -> list[Metric]:
        """One fresh object per selected metric, with its ``metric_options``."""
        return [METRICS[name](**self.metric_options.get(name, {})) for name in self.metrics_for(model)]

    def model_resolutions(self, model: nn.Module) -> list[tuple[int, int]]:
        """``resolutions`` as ``(H, W)``, else the model's ``native_resolution``."""
        if self.resolutions:
            return [as_hw(r) for r in self.resolutions]
        native = getattr(model, "native_resolution", None)
        if native is None:
            raise ValueError(f"set evaluate.resolutions: {type(model).__name__} has no native_resolution")
        return [as_hw(native)]

    def upsampled_resolutions(self, model: nn.Module) -> list[tuple[int, int]]:
        """The evaluated resolutions that also get the ``upsample_from`` baseline: those above it."""
        if self.upsample_from is None:
            return []
        source = as_hw(self.upsample_from)
        resolutions = self.model_resolutions(model)
        above = [r for r in resolutions if r[0] >= source[0] and r[1] >= source[1] and r != source]
        if not above:
            raise ValueError(
                f"evaluate.upsample_from={self.upsample_from} is not below any of evaluate.resolutions "
                f"{[label(r) for r in resolutions]}; add a larger resolution or set upsample_from: null"
            )
        return above

    def reference_source(
        self, dataset: FieldDataset, split: tuple[list[int], list[int]] | None
    ) -> tuple[FieldDataset, tuple[list[int], list[int]] | None]:
        """The reference images' dataset and split: ``reference_dataset`` (all of it) when set, else the
        data module's ``dataset`` and ``split``."""
        if self.reference_dataset is None:
            return dataset, split
        if self.reference_dataset.channels != dataset.channels:
            raise ValueError(
                f"evaluate.reference_dataset has {self.reference_dataset.channels} channel(s), the training "
                f"data {dataset.channels}; give the reference dataset channels: {dataset.channels}"
            )
        return self.reference_dataset, None

    def _check_sample_args(self, model: nn.Module) -> None:
        parameters = inspect.signature(model.sample).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            return
        unknown = sorted(set(self.settings.sample) - set(parameters))
        if unknown:
            takes = [
                n for n, p in parameters.items() if p.kind is p.KEYWORD_ONLY and n not in _OWN_SAMPLE_ARGS
            ]
            raise ValueError(
                f"evaluate.sample: {type(model).__name__}.sample() takes no {unknown}; it takes {takes}"
            )

    # ------------------------------------------------------------------ the evaluation
    def stats(
        self,
        dataset: FieldDataset,
        resolutions: Sequence[Resolution],
        split: tuple[list[int], list[int]] | None = None,
        *,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world: int = 1,
        gather: Gather = identity,
        model: nn.Module | None = None,
    ) -> list[Path]:
        """Compute (or find) the cached reference features every configured metric needs; return the files."""
        indices = self.pipeline.reference_indices(dataset, split)
        needs = set().union(*(METRICS[name].needs for name in self.metrics_for(model)))
        kinds = [kind for kind, need in (("full", "features"), ("crop", "crops")) if need in needs]
        files = []
        for resolution in map(as_hw, resolutions):
            for kind in kinds:
                common = dict(device=device, rank=rank, world=world, gather=gather)
                self.pipeline.reference_features(dataset, indices, resolution, kind, **common)  # type: ignore[arg-type]
                key = self.pipeline.cache_key(dataset, indices, resolution, kind)  # type: ignore[arg-type]
                files.append(self.pipeline.cache_file(key))
        return files

    @torch.no_grad()
    def run(
        self,
        model: nn.Module,
        dataset: FieldDataset,
        split: tuple[list[int], list[int]] | None = None,
        *,
        rank: int = 0,
        world: int = 1,
        gather: Gather = identity,
    ) -> dict[str, float]:
        """Every configured metric at every resolution, ``{"fid@32": ..., "swd@64": ...}``, on every rank."""
        self._active = self.metrics_for(model)
        metrics = self.build_metrics(model)
        sampling = [m for m in metrics if isinstance(m, SampleMetric)]
        reconstructing = [m for m in metrics if isinstance(m, ReconstructionMetric)]
        if reconstructing and not callable(getattr(model, "reconstruct", None)):
            names = [m.name for m in reconstructing]
            raise ValueError(
                f"{type(model).__name__} has no reconstruct(images, resolution): drop {names} from "
                "evaluate.metrics (they score autoencoders)"
            )
        if sampling:
            self._check_sample_args(model)
        indices = self.pipeline.reference_indices(dataset, split)
        double = any("reconstruction_2x" in m.needs for m in reconstructing)
        upsampled = self.upsampled_resolutions(model) if sampling else []
        source = as_hw(self.upsample_from) if upsampled else None
        source_images: Tensor | None = None  # this rank's images generated at the source resolution
        results: dict[str, float] = {}
        self.metric_keys = {}

        def record(metric: Metric, key_suffix: str) -> None:
            """``metric``'s figures under ``<key><key_suffix>``, noted as written by it."""
            figures = {f"{key}{key_suffix}": value for key, value in metric.compute(gather).items()}
            self.metric_keys.setdefault(metric.name, []).extend(figures)
            results.update(figures)

        def grid(name: str) -> Path | None:
            return None if self.grid_dir is None else self.grid_dir / f"eval_{name}.png"

        was_training = model.training
        model.eval()
        try:
            for resolution in self.model_resolutions(model):
                tag = label(resolution)
                for metric in metrics:
                    metric.reset()
                if sampling:
                    samples = SampleSet(
                        self.pipeline, model, dataset, indices, resolution, rank=rank, world=world,
                        gather=gather, grid=grid(tag), grid_size=self.save_grid,
                    )  # fmt: skip
                    for metric in sampling:
                        metric.update(samples)
                if reconstructing:
                    batches = self.pipeline.reconstruction_batches(
                        model, dataset, indices, resolution, rank=rank, world=world, double=double
                    )
                    for batch in batches:
                        for metric in reconstructing:
                            metric.update(batch)
                for metric in metrics:
                    record(metric, f"@{tag}")
                if sampling and resolution == source:
                    source_images = samples.generated
                if resolution in upsampled:
                    assert source is not None
                    suffix = f"_up{label(source)}"
                    baseline = SampleSet(
                        self.pipeline, model, dataset, indices, resolution, rank=rank, world=world,
                        gather=gather, grid=grid(f"{tag}{suffix}"), grid_size=self.save_grid,
                        source=source, source_images=source_images,
                    )  # fmt: skip
                    for metric in sampling:
                        metric.reset()
                        metric.update(baseline)
                        record(metric, f"{suffix}@{tag}")
        finally:
            model.train(was_training)
        self.results = results
        return results

    # ------------------------------------------------------------------ the callback
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        start = time.perf_counter()
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "dataset"):
            raise ValueError("Evaluate needs a FieldDataModule (its dataset is the reference set)")
        split = datamodule.split() if hasattr(datamodule, "split") else None
        dataset, split = self.reference_source(datamodule.dataset, split)
        strategy = trainer.strategy
        self.grid_dir = Path(trainer.default_root_dir) / "samples"
        results = self.run(
            pl_module,
            dataset,
            split,
            rank=trainer.global_rank,
            world=trainer.world_size,
            gather=lambda tensor: gather_rows(tensor, strategy),
        )
        self.seconds = time.perf_counter() - start
        for key, value in results.items():
            pl_module.log(f"eval/{key}", value, rank_zero_only=True, batch_size=1)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = dict(self.results)
        for key, value in trainer.callback_metrics.items():
            if key.startswith("test/"):
                metrics[key] = float(value)
        cls = type(pl_module)
        report = {
            "model": f"{cls.__module__}.{cls.__qualname__}",
            "checkpoint": str(trainer.ckpt_path) if trainer.ckpt_path else None,
            "resolutions": [label(r) for r in self.model_resolutions(pl_module)],
            "settings": self.report_settings(pl_module),
            "metrics": metrics,
            "metric_keys": self.metric_keys,
            "eval_seconds": self.seconds,
            "world_size": trainer.world_size,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        path = Path(trainer.default_root_dir) / self.output
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {path}")

    def report_settings(self, model: nn.Module | None = None) -> dict[str, Any]:
        """The settings behind the figures, as ``metrics.json`` records them."""
        s = self.settings
        names = ("num_samples", "batch_size", "seed", "feature", "feature_seed", "reference", "num_reference")
        reference_dataset = None if self.reference_dataset is None else repr(self.reference_dataset)
        return {name: getattr(s, name) for name in names} | {
            "reference_dataset": reference_dataset,
            "crops_per_image": s.crops_per_image,
            "upsample_from": self.upsample_from,
            "metrics": self._active or self.metrics_for(model),
            "metric_options": {m.name: m.options() for m in self.build_metrics(model)},
            "steps": self.steps,
            "use_ema": self.use_ema,
            "sample": self.sample,
            "patch_size": s.patch_size,
            "feature_name": self.extractor.name,
        }


def _metric_options(
    options: dict[str, dict[str, Any]], deprecated: dict[str, int | None]
) -> dict[str, dict[str, Any]]:
    """``metric_options`` checked against the registry, with the deprecated top-level keys folded in."""
    unknown = sorted(set(options) - set(METRICS))
    if unknown:
        raise ValueError(
            f"evaluate.metric_options names unknown metrics {unknown}; choose from {sorted(METRICS)}"
        )
    merged = {name: dict(values) for name, values in options.items()}
    for key, value in deprecated.items():
        if value is None:
            continue
        name, option = _DEPRECATED[key]
        warnings.warn(
            f"evaluate.{key} is deprecated: set evaluate.metric_options: {{{name}: {{{option}: {value}}}}}",
            FutureWarning,
            stacklevel=3,
        )
        if option in merged.get(name, {}):
            raise ValueError(
                f"evaluate.{key} and evaluate.metric_options.{name}.{option} are both set; keep one"
            )
        merged.setdefault(name, {})[option] = value
    for name, values in merged.items():
        try:
            METRICS[name](**values)
        except TypeError as error:
            raise ValueError(f"evaluate.metric_options.{name}: {error}") from error
    return merged


def _sample_args(steps: int | None, use_ema: bool, sample: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of every ``model.sample`` call: ``steps``, ``use_ema`` and ``sample``."""
    own = sorted(set(sample) & set(_OWN_SAMPLE_ARGS))
    if own:
        raise ValueError(
            f"evaluate.sample cannot set {own}: the harness chooses them (seed with evaluate.seed)"
        )
    if "use_ema" in sample:
        raise ValueError("evaluate.sample cannot set use_ema: set evaluate.use_ema")
    if "steps" in sample and steps is not None:
        raise ValueError("evaluate.steps and evaluate.sample.steps are both set; keep one")
    return {"steps": steps, "use_ema": use_ema, **sample}
