"""The ``rezdiff`` command: ``fit``/``validate``/``test``/``predict`` through LightningCLI, ``stats``,
``sample``, ``export`` and ``sweep``.

A run directory (``--trainer.default_root_dir``) holds ``config.yaml``, ``checkpoints/`` (``last.ckpt``
always), the the TensorBoard logs (with the learning rate), ``samples/`` and, after ``rezdiff test``,
``metrics.json``. Every config accepts a top-level ``evaluate:`` section (the settings of
:class:`rezdiff.evaluation.Evaluate`); ``test`` runs it after the test loss and ``stats`` caches its
reference features.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import Logger, TensorBoardLogger

from rezdiff.callbacks.checkpoint import AtomicCheckpoints, CheckpointWriteError
from rezdiff.callbacks.predictions import PredictionWriter
from rezdiff.data.datamodule import FieldDataModule
from rezdiff.evaluation import Evaluate
from rezdiff.models.base import DiffusionModule
from rezdiff.sample import sample_main

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
HELP = """usage: rezdiff <command> [options]

Resolution-agnostic diffusion models, trained and sampled from one command.

commands:
  fit        train a model:           rezdiff fit --config configs/quickstart/ddpm.yaml
  validate   validation loss of a checkpoint:  rezdiff validate --config CFG --ckpt_path CKPT
  test       test-set loss and the `evaluate:` metrics (FID, KID, SWD, ... at each resolution) of a
             checkpoint, written to <run>/metrics.json:  rezdiff test --config CFG --ckpt_path CKPT
  predict    generate one PNG per seed into <run>/predictions/<H>x<W>/seed######.png, on any number of
             ranks: rezdiff predict --config CFG --ckpt_path CKPT --predictions.seeds 0-49999
             [--predictions.resolution 256] [--predictions.sample_options '{sampler: ddim, eta: 0.5}']
  sample     write samples of any checkpoint at several resolutions, or solve an inverse problem:
             rezdiff sample --ckpt run/checkpoints/last.ckpt --resolution 64 128 --num 16 --out samples/
             (∞-Diff: --inpaint IMAGE --hole=X0,Y0,X1,Y1 | --mask IMAGE; --super-resolve IMAGE;
              INFD: --guide box=X0,Y0,X1,Y1,loss=color,mean=R,G,B --guidance-scale 20;
              INFD stage 1: --super-resolve IMAGE renders its reconstruction at --resolution)
  stats      compute and cache the reference features `evaluate:` needs:  rezdiff stats --config CFG
  export     a checkpoint as a diffusers pipeline (DDPM, INFD) or as safetensors + JSON (any model):
             rezdiff export --ckpt CKPT --out DIR --format diffusers|safetensors
  sweep      fit + test a grid of runs, one results table and plot:
             rezdiff sweep configs/sweeps/families_quickstart.yaml [--print-commands]

`rezdiff <command> --help` lists a command's options (`rezdiff sample --ckpt CKPT --help`: with the
sampler settings of that checkpoint's family); fit/validate/test/predict/stats accept every
LightningCLI option (--print_config, several -c files, dotted overrides such as --evaluate.resolutions
[32,64], --ckpt_path).
"""


def default_logger(root: str) -> Logger:
    """TensorBoard (a dependency) writing straight into the run directory, without the ``hp_metric``
    placeholder Lightning would log at -1."""
    return TensorBoardLogger(save_dir=root, name="", version="", default_hp_metric=False)


class RezdiffCLI(LightningCLI):
    """LightningCLI with rezdiff's run-directory defaults and the ``evaluate:`` section, which ``test``
    installs as a callback; everything else is Lightning's own behaviour."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_class_arguments(Evaluate, "evaluate")
        parser.add_class_arguments(PredictionWriter, "predictions")

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        config = (
            self.config_init[self.subcommand]["trainer"] if self.subcommand else self.config_init["trainer"]
        )
        root = config.get("default_root_dir") or "."
        if config.get("logger") in (None, True):
            kwargs["logger"] = default_logger(root)
        callbacks = list(config.get("callbacks") or [])
        extra: list[Any] = [AtomicCheckpoints()]
        has_monitor = any(isinstance(callback, LearningRateMonitor) for callback in callbacks)
        if config.get("logger") is not False and not has_monitor:
            extra.append(LearningRateMonitor())
        if not any(isinstance(callback, ModelCheckpoint) for callback in callbacks):
            extra.append(ModelCheckpoint(dirpath=str(Path(root) / "checkpoints"), save_last=True))
        if self.subcommand == "test":
            evaluate = self.config_init["test"].get("evaluate")
            if isinstance(evaluate, Evaluate) and evaluate.metrics != []:  # `metrics: []` turns it off
                extra.append(evaluate)
        if self.subcommand == "predict":
            extra.append(self.config_init["predict"]["predictions"])
        kwargs["callbacks"] = callbacks + extra
        return super().instantiate_trainer(**kwargs)

    def predict(self, model: DiffusionModule, **kwargs: Any) -> None:
        """``rezdiff predict``: the ``predictions:`` settings' seeds (not the datamodule) through the model's
        ``predict_step``, written by :class:`PredictionWriter`; predictions are not kept in memory."""
        writer: PredictionWriter = self.config_init["predict"]["predictions"]
        writer.check(model)
        self.trainer.predict(
            model,
            dataloaders=writer.dataloader(),
            return_predictions=bool(kwargs.get("return_predictions")),
            ckpt_path=kwargs.get("ckpt_path"),
        )


def lightning_main(args: list[str] | None) -> RezdiffCLI:
    return RezdiffCLI(
        DiffusionModule,
        FieldDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
    )


def stats_main(args: list[str]) -> list[Path]:
    """``rezdiff stats --config CFG``: compute the reference features of ``evaluate:`` once and cache them."""
    import torch

    cli = RezdiffCLI(
        DiffusionModule,
        FieldDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        args=args,
    )
    evaluate: Evaluate = cli.config_init["evaluate"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    resolutions = evaluate.model_resolutions(cli.model)
    datamodule = cli.datamodule
    files = evaluate.stats(
        datamodule.dataset, resolutions, datamodule.split(), device=device, model=cli.model
    )
    print(
        f"reference features: {evaluate.cache_misses} computed, {evaluate.cache_hits} found in the cache "
        f"({evaluate.stats_dir}):"
    )
    for path in files:
        print(f"  {path}")
    return files


def main(args: list[str] | None = None) -> Any:
    """Run one command; returns the LightningCLI object (or the files ``sample`` wrote) for tests."""
    argv = list(sys.argv[1:] if args is None else args)
    if not argv or argv[0] in ("-h", "--help"):
        print(HELP)
        if not argv:
            raise SystemExit(2)
        return None
    command = argv[0]
    if command == "sample":
        return sample_main(argv[1:])
    if command == "sweep":
        from rezdiff.sweep import sweep_main

        return sweep_main(argv[1:])
    if command == "stats":
        return _friendly(command, lambda: stats_main(argv[1:]))
    if command == "export":
        from rezdiff.export import export_main

        return export_main(argv[1:])
    if command not in LIGHTNING_COMMANDS:
        raise SystemExit(f"rezdiff: unknown command {command!r}\n\n{HELP}")
    # None: LightningCLI reads sys.argv itself (as DDP re-launches expect)
    return _friendly(command, lambda: lightning_main(args))


def _friendly(command: str, run: Any) -> Any:
    try:
        return run()
    except (ValueError, FileNotFoundError, CheckpointWriteError) as error:
        # A missing dataset folder or weights file may reach us wrapped by jsonargparse, a full disk through
        # Lightning, a constructor's check inside jsonargparse's "Does not validate against any of the Union
        # subtypes": say just that.
        cause = _first_cause(error, (FileNotFoundError, CheckpointWriteError))
        if cause is not None:
            raise SystemExit(f"rezdiff {command}: error: {cause}") from error
        check = _rezdiff_check(error)
        if check is None:
            raise
        raise SystemExit(f"rezdiff {command}: error: {check}") from error


def _chain(error: BaseException | None) -> Iterator[BaseException]:
    """``error`` and the exceptions it was raised from or during, outermost first."""
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


def _rezdiff_check(error: BaseException) -> str | None:
    """The message of the innermost ValueError that rezdiff's own code raised in ``error``'s
    chain, prefixed by the class whose constructor raised it (``FieldDataModule: batch_size must be ...``);
    None when the error is not one of rezdiff's checks (a bug: keep the traceback)."""
    package = str(Path(__file__).parent)
    found = None
    for link in _chain(error):
        traceback = link.__traceback__
        while traceback is not None and traceback.tb_next is not None:
            traceback = traceback.tb_next
        frame = traceback.tb_frame if traceback is not None else None
        if isinstance(link, ValueError) and frame and frame.f_code.co_filename.startswith(package):
            owner = frame.f_locals.get("self") if frame.f_code.co_name == "__init__" else None
            found = f"{type(owner).__name__}: {link}" if owner is not None else str(link)
    return found


def _first_cause(
    error: BaseException, kind: type[BaseException] | tuple[type[BaseException], ...]
) -> BaseException | None:
    return next((link for link in _chain(error) if isinstance(link, kind)), None)


def entry_point() -> None:
    """The ``rezdiff`` console script and ``python -m rezdiff`` (exit status 0 unless something fails)."""
    main()
