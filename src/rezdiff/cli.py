"""The ``rezdiff`` command: ``fit``/``validate``/``test``/``predict`` through LightningCLI, ``stats``,
``sample``, ``export`` and ``sweep``.

Every command parses with jsonargparse in one dialect (``-c`` files, ``--print_config``, underscores, dotted
keys): LightningCLI's parser for the four Lightning commands and ``stats`` (which shares their options),
:func:`rezdiff.commands.command_parser` for ``sample``, ``sweep`` and ``export``.

A run directory (``--trainer.default_root_dir``) holds ``config.yaml``, ``checkpoints/`` (``last.ckpt``
always), the TensorBoard logs (with the learning rate), ``samples/`` and, after ``rezdiff test``,
``metrics.json``. Every config accepts a top-level ``evaluate:`` section (the settings of
:class:`rezdiff.evaluation.Evaluate`); ``test`` runs it after the test loss and ``stats`` caches its
reference features.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import Logger, TensorBoardLogger

from rezdiff.callbacks.checkpoint import AtomicCheckpoints, CheckpointWriteError, LastCheckpoint
from rezdiff.callbacks.predictions import PredictionWriter
from rezdiff.commands import HELP, print_overview
from rezdiff.data.datamodule import FieldDataModule
from rezdiff.evaluation import Evaluate
from rezdiff.loading import (
    CheckpointError,
    check_weight_shapes,
    checkpoint_class,
    read_checkpoint,
    recorded_hyperparameters,
)
from rezdiff.models import DDPM, DVDP, DiffusionModule, MultilevelSDE
from rezdiff.models.hparams_context import cli_building
from rezdiff.models.infd import INFD, INFDAutoencoder
from rezdiff.models.infty_diff import InftyDiff, InftyDiffLatent
from rezdiff.nn.unet import UNET_SETTINGS, former_unet_arguments
from rezdiff.sample import sample_main

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


SAMPLE_TIME_SETTINGS: dict[type[DiffusionModule], frozenset[str]] = {
    DDPM: frozenset({"sampler", "sample_steps", "spacing", "eta", "clip_denoised", "eps_after_clip"}),
    DVDP: frozenset({"sampler", "sample_steps", "eta", "clip_denoised"}),
    MultilevelSDE: frozenset({"sampler", "sample_steps", "sample_t_min", "denoise_final"}),
    InftyDiff: frozenset(
        {"sampler", "sample_steps", "spacing", "eta", "clip_denoised", "eps_after_clip", "deblur"}
    ),
    InftyDiffLatent: frozenset({"sample_steps", "spacing", "eta"}),
    INFDAutoencoder: frozenset({"render_tile", "render_pad", "val_render_resolutions", "val_render_num"}),
    INFD: frozenset({"sample_steps", "spacing", "eta"}),
}
"""Per family, the constructor arguments that only change ``sample()``/rendering or what validation logs,
never the weights or the training: given with ``--ckpt_path``, these win over the checkpoint's values."""


def sample_time_settings(cls: type) -> frozenset[str]:
    """The :data:`SAMPLE_TIME_SETTINGS` of ``cls`` (a family's subclass inherits its family's)."""
    return next((SAMPLE_TIME_SETTINGS[k] for k in cls.__mro__ if k in SAMPLE_TIME_SETTINGS), frozenset())


def _plain(value: Any) -> Any:
    """``value`` with Namespaces as dicts and tuples as lists, comparable with recorded values."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _fold_flat_unet(init_args: dict[str, Any]) -> dict[str, Any]:
    """Given model arguments with the former flat U-Net arguments folded into ``unet`` (over the given
    ``unet``'s keys): how a checkpoint records them, so that an old run's flat ``config.yaml`` (which also
    holds a default-filled ``unet``) resumes against its own checkpoint."""
    flat = former_unet_arguments(init_args)
    for key in UNET_SETTINGS:
        init_args.pop(key, None)
    if flat:
        init_args["unet"] = {**(init_args.get("unet") or {}), **flat}
    return init_args


def _same_class(a: Any, b: Any) -> bool:
    """Two class paths that name one class (``rezdiff.models.DDPM`` and ``rezdiff.models.ddpm.module.DDPM``,
    ``torch.optim.AdamW`` and ``torch.optim.adamw.AdamW``); only paths inside rezdiff and torch are imported
    to find out."""
    if a == b:
        return True
    if not all(isinstance(p, str) and p.startswith(("rezdiff.", "torch.")) for p in (a, b)):
        return False
    try:
        return _class_of(a) is _class_of(b)
    except (ImportError, AttributeError):
        return False


def _differences(name: str, given: Any, recorded: Any) -> Iterator[str]:
    """Where a value given in the config differs from the checkpoint's, one ``key (given, recorded)`` each;
    a given dict compares its own keys only (a nested class spec names only the arguments the user set),
    and a changed ``class_path`` is reported alone (its arguments then mean something else)."""
    if isinstance(given, dict) and isinstance(recorded, dict):
        if "class_path" in given and not _same_class(given["class_path"], recorded.get("class_path")):
            recorded_path = recorded.get("class_path")
            yield f"{name}.class_path ({given['class_path']!r} given, {recorded_path!r} in the checkpoint)"
            return
        for key, value in given.items():
            if key != "class_path":
                yield from _differences(f"{name}.{key}", value, recorded.get(key))
    elif given != recorded:
        yield f"{name} ({given!r} given, {recorded!r} in the checkpoint)"


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

    @staticmethod
    def link_optimizers_and_lr_schedulers(parser: Any) -> None:
        """Lightning's hook right after it adds ``--optimizer``/``--lr_scheduler``: hide them from ``--help``
        (they are refused, see :meth:`before_instantiate_classes`). They stay parsed (not left out with
        ``auto_configure_optimizers=False``) because every run's ``config.yaml`` written so far holds
        ``optimizer: null`` and ``lr_scheduler: null``, which the parser must still read; and a refusal that
        names ``--model.init_args.optimizer`` says more than jsonargparse's "unrecognized arguments"."""
        LightningCLI.link_optimizers_and_lr_schedulers(parser)
        for action in parser._actions:
            if action.dest.split(".")[0] in ("optimizer", "lr_scheduler"):
                action.help = argparse.SUPPRESS

    def before_instantiate_classes(self) -> None:
        """Refuse Lightning's top-level ``--optimizer``/``--lr_scheduler``: they would replace the model's
        ``configure_optimizers`` while the model's own optimiser settings stayed in its config, meaningless.
        A model's optimiser and schedule are its constructor arguments (one source of truth)."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        for key in ("optimizer", "lr_scheduler"):
            if config.get(key) is None:
                continue
            names: tuple[str, ...] = (key,)
            if key == "optimizer":
                model_class = _class_of(config["model"].class_path) if config.get("model") else None
                names = getattr(model_class, "optimizer_arguments", names)
            where = " / ".join(f"--model.init_args.{name}" for name in names)
            raise ValueError(
                f"--{key} at the top level is refused: it would silently replace the model's own, which is "
                f"set by {where} (a config: model.init_args.{names[0]}: {{class_path: ..., init_args: ...}})"
            )

    def parse_arguments(self, parser: Any, args: Any) -> None:
        self._raw_args = args  # parsed again without defaults when a checkpoint needs what was given
        super().parse_arguments(parser, args)

    def _given_model_arguments(self, subcommand: str) -> dict[str, Any]:
        """The model arguments the config files and the command line set explicitly (defaults left out)."""
        args = self._raw_args
        if isinstance(args, (dict, Namespace)):
            given = self.parser.parse_object(args, defaults=False)
        else:
            given = self.parser.parse_args(args, defaults=False)
        model = _plain((given.get(subcommand) or {}).get("model") or {})
        return dict(model.get("init_args") or {}) if isinstance(model, dict) else {}

    def _parse_ckpt_path(self) -> None:
        """Take the model's class and hyperparameters from the ``--ckpt_path`` checkpoint, as Lightning does,
        but never silently: a checkpoint of another class than the config's, or a given hyperparameter that
        differs from the checkpoint's, is an error naming it; the sample-time settings
        (:data:`SAMPLE_TIME_SETTINGS`) given in the config or on the command line win over the
        checkpoint's. The optimisers, ``lr_scheduler`` and ``ema`` are not among them: a resumed fit restores
        their states (learning rates included) from the checkpoint, which would silently overrule a change."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        ckpt_path = self.config[subcommand].get("ckpt_path")
        if not ckpt_path or not Path(ckpt_path).is_file():
            return  # "last"/"best"/... are Lightning's to resolve; a missing file fails there with its name
        checkpoint = read_checkpoint(ckpt_path)
        recorded_class = checkpoint_class(ckpt_path, checkpoint)
        model_config = self.config[subcommand]["model"]
        configured = _class_of(model_config.class_path)
        if configured is not recorded_class:
            raise CheckpointError(
                f"--ckpt_path {ckpt_path} holds a {recorded_class.__name__} but the config's model is "
                f"{getattr(configured, '__name__', configured)}: set model.class_path to "
                f"{recorded_class.__module__}.{recorded_class.__qualname__} (the run's config.yaml has it)"
            )
        recorded = recorded_hyperparameters(ckpt_path, checkpoint, recorded_class)
        free = sample_time_settings(recorded_class)
        overrides, conflicts = {}, []
        given = self._given_model_arguments(subcommand)
        if "unet" in recorded:  # a U-Net-group family (∞-Diff has dropout etc. of its own)
            given = _fold_flat_unet(given)
        for name, value in given.items():
            if name in free or name not in recorded:  # an option newer than the checkpoint is the config's
                overrides[name] = value
            else:
                conflicts.extend(_differences(name, value, _plain(recorded[name])))
        if conflicts:
            raise CheckpointError(
                f"--ckpt_path {ckpt_path}: model.init_args {'; '.join(conflicts)} cannot change for a "
                f"checkpoint's model (only {', '.join(sorted(free)) or 'no settings'} can): drop the "
                "override, or use the run's config.yaml"
            )
        self._ckpt_weight_shapes = (ckpt_path, {k: v.shape for k, v in checkpoint["state_dict"].items()})
        init_args = {**recorded, **overrides}
        update = {"class_path": model_config.class_path, "init_args": init_args}
        self.config = self.parser.parse_object({subcommand: {"model": update}}, self.config)

    def instantiate_classes(self) -> None:
        with cli_building():  # the model's optimiser specs are recorded by the CLI, as its config
            super().instantiate_classes()

    def after_instantiate_classes(self) -> None:
        """A checkpoint whose weights do not fit the model its own hyperparameters build: one line naming
        the weight (Lightning would raise ``size mismatch`` for every tensor)."""
        recorded = getattr(self, "_ckpt_weight_shapes", None)
        if recorded is not None:
            check_weight_shapes(recorded[0], self.model, recorded[1])
        super().after_instantiate_classes()

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
        if not any(isinstance(callback, ModelCheckpoint) and callback.save_last for callback in callbacks):
            extra.append(LastCheckpoint(dirpath=str(Path(root) / "checkpoints")))
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
    import warnings

    import torch

    with warnings.catch_warnings():  # args are given because `stats` is not one of LightningCLI's commands
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter", category=UserWarning)
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
    dataset, split = evaluate.reference_source(datamodule.dataset, datamodule.split())
    files = evaluate.stats(dataset, resolutions, split, device=device, model=cli.model)
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
    if print_overview(argv):
        return None
    command = argv[0]
    if command == "sample":
        try:
            return sample_main(argv[1:])
        except (CheckpointError, FileNotFoundError) as error:  # a bad or missing file: say which and why
            raise SystemExit(f"rezdiff sample: error: {error}") from error
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
        cause = _first_cause(error, (FileNotFoundError, CheckpointWriteError, CheckpointError))
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


def _class_of(class_path: str) -> Any:
    """The class a parsed config's ``class_path`` names (already imported by the parser)."""
    import importlib

    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def entry_point() -> None:
    """``main`` without its return value (the CLI object tests inspect), so the exit status is 0 unless
    something fails; ``rezdiff.commands.entry_point`` (the console script) calls it."""
    main()
