"""``DiffusionModule``: the contract every family's LightningModule fulfils.

A family provides ``loss(batch, generator)`` and ``sample(num, resolution, ...)``; this base class turns
them into training, validation, test and predict steps, keeps the EMA copy of the network inside the
state_dict, builds the injected optimiser and learning-rate schedule (:mod:`rezdiff.models.optimization`),
stops on non-finite losses and records which class to rebuild in every checkpoint (see :func:`rezdiff.load`).

(Over ~400 lines: it is the one contract seven classes share: steps, EMA, optimiser, data-view checks and
checkpoint hooks; each family file stays short because this one holds them.)
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import logging
import os
import random
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from rezdiff.core.ema import EMA
from rezdiff.core.samplers import check_sampler, sampler_names
from rezdiff.core.sampling import Generators
from rezdiff.data.batch import FieldBatch
from rezdiff.data.coords import Resolution, as_hw
from rezdiff.data.views import FieldView, RandomPixels
from rezdiff.models.hparams_context import building_under_cli
from rezdiff.models.optimization import EMASettings, probe, recordable, resolve_factory
from rezdiff.nn.unet import UNET_SETTINGS, UNetSettings, former_unet_arguments

logger = logging.getLogger(__name__)

# The EMA copy is an eval-mode submodule by design; Lightning would warn about it at every fit.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode", category=UserWarning)


class NonFiniteLossError(RuntimeError):
    """Raised when a training loss is NaN or infinite; names the step and the batch."""


def step_generator(*keys: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded from integer keys (seed, step, batch, rank): reproducible and resumable."""
    digest = hashlib.blake2b(repr(keys).encode(), digest_size=8).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


@dataclass
class SeedBatch:
    """A batch of ``rezdiff predict``: the seeds of its images, the resolution to sample at (None: the
    model's), the keyword arguments of ``sample()`` (sampler settings) and whether each image is sampled
    alone (``sample_seeds``'s ``batch_invariant``)."""

    seeds: list[int]
    resolution: tuple[int, int] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    batch_invariant: bool = False


class DiffusionModule(pl.LightningModule, ABC):
    """Base of every family. Subclasses build ``self.network``, call :meth:`setup_ema` and implement
    :meth:`loss` and :meth:`sample`; their ``__init__`` takes typed arguments only and calls
    ``self.save_hyperparameters()`` so that a checkpoint alone rebuilds the model.

    Randomness in a training step (timesteps, noise) comes from a generator keyed by (global seed,
    step, batch, rank), so a run resumed from a checkpoint continues exactly as the uninterrupted one.
    """

    network: nn.Module
    ema: EMA | None
    #: Hyperparameters added after checkpoints of this class were first written, with the value that
    #: reproduces those checkpoints' behaviour. ``rezdiff.loading.build`` fills them into records that lack
    #: them, so an older checkpoint rebuilds as it was trained rather than with today's default.
    recorded_defaults: ClassVar[dict[str, Any]] = {}
    #: The process whose registered samplers (:mod:`rezdiff.core.samplers`) the family runs: every name
    #: registered for it is a valid ``sample(sampler=...)``. ``None``: the family does not sample from noise.
    sampler_process: ClassVar[str | None] = None

    #: The constructor arguments that are injected optimiser factories, in the order of
    #: ``configure_optimizers`` (INFD's autoencoder has two: generator and discriminator).
    optimizer_arguments: ClassVar[tuple[str, ...]] = ("optimizer",)

    def __init__(
        self,
        *,
        optimizers: Mapping[str, Any],
        lr_scheduler: Any = None,
        ema: EMASettings | Mapping[str, Any] | None = None,
        unet: UNetSettings | Mapping[str, Any] | None = None,
        former_unet_arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """``optimizers``: each of :attr:`optimizer_arguments` with its factory (a ``{class_path,
        init_args}`` spec or a callable taking the parameters); ``lr_scheduler``: a spec or callable taking
        the (first) optimiser, None for a constant rate; ``ema``: the EMA settings, None for no EMA;
        ``unet``: a family's U-Net settings (``self.unet_settings``), with ``former_unet_arguments`` the
        deprecated flat arguments it was given, read by the names of :data:`UNET_SETTINGS` (the
        constructor's ``locals()``; None where not given; :meth:`_unet_settings`)."""
        super().__init__()
        if set(optimizers) != set(self.optimizer_arguments):
            raise ValueError(
                f"{type(self).__name__} takes optimisers {self.optimizer_arguments}, got {tuple(optimizers)}"
            )
        under_cli = building_under_cli()  # the CLI records the config's specs itself
        defaults = inspect.signature(type(self).__init__).parameters
        injected = {name: optimizers[name] for name in self.optimizer_arguments}
        if lr_scheduler is not None:
            injected["lr_scheduler"] = lr_scheduler
        self._factory_records: dict[str, dict[str, Any] | None] = {}
        for name, value in injected.items():
            record = recordable(value)
            if record is None and not under_cli:
                raise ValueError(
                    f"{name}={value!r} cannot be recorded in a checkpoint: give a {{class_path, init_args}} "
                    "dict, a class or functools.partial(class, **init_args)"
                )
            default = defaults[name].default if name in defaults else None
            if (
                record is not None
                and isinstance(default, Mapping)
                and record["class_path"] == default["class_path"]
            ):
                # the family's class with some arguments: the others keep the family's values, as in a config
                record["init_args"] = {**copy.deepcopy(dict(default["init_args"])), **record["init_args"]}
            if record is not None:
                injected[name] = record
            self._factory_records[name] = record
        self.optimizer_factories: dict[str, Callable[..., Any]] = {
            name: resolve_factory(injected[name], name, torch.optim.Optimizer)
            for name in self.optimizer_arguments
        }
        self.lr_scheduler_factory = (
            None
            if lr_scheduler is None
            else resolve_factory(
                injected["lr_scheduler"], "lr_scheduler", torch.optim.lr_scheduler.LRScheduler
            )
        )
        for index, name in enumerate(self.optimizer_arguments):
            probe(self.optimizer_factories[name], self.lr_scheduler_factory if index == 0 else None, name)
        if isinstance(ema, Mapping) and isinstance(defaults.get("ema"), inspect.Parameter):
            default_ema = defaults["ema"].default
            if isinstance(default_ema, EMASettings):  # some settings given: the others keep the family's
                ema = {**default_ema.as_dict(), **ema}
        self.ema_settings = None if ema is None else EMASettings.of(ema)
        self.ema = None
        self.unet_settings = None if unet is None else self._unet_settings(unet, former_unet_arguments or {})

    def _unet_settings(self, unet: Any, former: Mapping[str, Any]) -> UNetSettings:
        """``unet`` as settings (a partial dict keeps the family's values for the rest), overridden by the
        former flat arguments given (one FutureWarning naming the new keys). Flat arguments with a ``unet``
        other than the family's default are a ValueError, unless they state the same values (an old run's
        config resumed against its checkpoint, whose recorded settings arrive as ``unet``). A ``unet`` equal
        to the default counts as not given: the CLI always hands the group, filled with its defaults."""
        name = type(self).__name__
        default = self.default_unet()
        if not isinstance(unet, (UNetSettings, Mapping)) and callable(getattr(unet, "as_dict", None)):
            unet = unet.as_dict()  # a jsonargparse Namespace
        if isinstance(unet, Mapping):
            unet = {**default.as_dict(), **unet}
        settings = UNetSettings.of(unet)
        given = former_unet_arguments(former)
        if not given:
            return settings
        if settings != default:
            clashing = [key for key, value in given.items() if replace(settings, **{key: value}) != settings]
            if clashing:
                raise ValueError(
                    f"{name} got unet and the former flat argument(s) {', '.join(clashing)} with other "
                    f"values: give only unet (model.init_args.unet.{clashing[0]} in a config)"
                )
        flat = ", ".join(f"model.init_args.{key}" for key in given)
        grouped = ", ".join(f"model.init_args.unet.{key}" for key in given)
        verb = "is a former flat argument" if len(given) == 1 else "are former flat arguments"
        rank_zero_warn(
            f"{flat} {verb} of {name}: write {grouped} (Python: unet=rezdiff.models.UNetSettings(...) or a "
            "dict); the flat form will be removed in the next release",
            category=FutureWarning,
        )
        return replace(settings, **given)

    def save_hyperparameters(
        self, *args: Any, ignore: Any = None, frame: Any = None, logger: bool = True
    ) -> None:
        """Lightning's ``save_hyperparameters`` (the caller's arguments), then the injected factories and the
        EMA settings as plain data (``{class_path, init_args}`` specs, a dict), so that a checkpoint stays
        readable with ``weights_only=True`` whatever form they were given in."""
        if frame is None:
            frame = inspect.currentframe().f_back  # type: ignore[union-attr]
        super().save_hyperparameters(*args, ignore=ignore, frame=frame, logger=logger)
        plain: dict[str, Any] = {}
        for name, record in self._factory_records.items():
            if name in self.hparams and record is not None:  # None: given by the CLI, which recorded its spec
                plain[name] = record
        if "ema" in self.hparams and self.ema_settings is not None:
            plain["ema"] = self.ema_settings.as_dict()  # every setting, the family's where none was given
        if "unet" in self.hparams and self.unet_settings is not None:
            plain["unet"] = self.unet_settings.as_dict()  # the grouped form, whatever form was given
            for record in (self.hparams, self._hparams_initial):
                for key in UNET_SETTINGS:
                    record.pop(key, None)  # the deprecated flat arguments live on in "unet" only
        self.hparams.update(plain)
        self._hparams_initial.update(plain)

    @classmethod
    def default_unet(cls) -> UNetSettings:
        """The family's ``unet`` default (``UNetSettings()`` where the constructor gives none)."""
        parameter = inspect.signature(cls.__init__).parameters.get("unet")
        default = parameter.default if parameter is not None else None
        return default if isinstance(default, UNetSettings) else UNetSettings()

    @classmethod
    def upgrade_hyperparameters(
        cls, hparams: Mapping[str, Any], origin: str = "a checkpoint"
    ) -> dict[str, Any]:
        """``hparams`` recorded before the injected optimiser (``lr``, ``adam_betas``, ``weight_decay``,
        ``warmup_steps``, ``ema_decay``, ``ema_update_every``, ``ema_warmup``) or before the ``unet`` group
        (its settings as flat arguments) in today's form, with one warning; ``hparams`` unchanged when it
        has none of them."""
        hparams = dict(hparams)
        parameters = inspect.signature(cls.__init__).parameters
        flat_unet: dict[str, Any] = {}
        if "unet" in parameters:  # ∞-Diff's own dropout, attention_head_dim, ... are not U-Net settings
            flat_unet = former_unet_arguments(hparams)
            for key in UNET_SETTINGS:
                hparams.pop(key, None)
        if flat_unet and hparams.get("unet") is not None:
            raise ValueError(
                f"{origin} records both unet and the former flat U-Net argument(s) "
                f"{', '.join(flat_unet)}; keep only unet"
            )
        legacy = {key: hparams.pop(key) for key in LEGACY_OPTIMIZATION_KEYS if key in hparams}
        if not legacy and not flat_unet:
            return hparams
        read = []
        if legacy:
            read.append(
                f"{', '.join(sorted(legacy))}, the former optimiser and EMA arguments, as "
                f"{', '.join(cls.optimizer_arguments)}, lr_scheduler and ema"
            )
        if flat_unet:
            read.append(f"{', '.join(flat_unet)}, the former flat U-Net arguments, as unet")
        warnings.warn(
            f"{origin} records old arguments; read {' and '.join(read)} (saving it again records those)",
            FutureWarning,
            stacklevel=2,
        )
        if flat_unet:
            hparams["unet"] = replace(cls.default_unet(), **flat_unet).as_dict()
        if not legacy:
            return hparams
        for name in cls.optimizer_arguments:
            default = parameters[name].default if name in parameters else None
            spec = recordable(hparams.get(name, default)) or {"class_path": None, "init_args": {}}
            init_args = spec["init_args"]
            if "lr" in legacy:
                init_args["lr"] = legacy["lr"]
            if "adam_betas" in legacy:
                init_args["betas"] = list(legacy["adam_betas"])
            if "weight_decay" in legacy:
                init_args["weight_decay"] = legacy["weight_decay"]
            hparams[name] = spec
        if "lr_scheduler" in parameters and "warmup_steps" in legacy:
            steps = int(legacy["warmup_steps"])
            hparams["lr_scheduler"] = (
                {"class_path": "rezdiff.models.LinearWarmup", "init_args": {"steps": steps}}
                if steps > 0
                else None
            )
        if "ema" in parameters and {"ema_decay", "ema_update_every", "ema_warmup"} & set(legacy):
            default = parameters["ema"].default
            ema = EMASettings.of(hparams.get("ema", default)).as_dict()
            for old, new in (
                ("ema_decay", "decay"),
                ("ema_update_every", "update_every"),
                ("ema_warmup", "warmup"),
            ):
                if old in legacy:
                    ema[new] = legacy[old]
            hparams["ema"] = ema
        return hparams

    # ----------------------------------------------------------------- what a family provides
    @abstractmethod
    def loss(self, batch: FieldBatch, generator: torch.Generator) -> Tensor:
        """The training objective on one batch; all randomness drawn from ``generator``."""

    @abstractmethod
    def sample(
        self,
        num: int,
        resolution: Resolution | None = None,
        *,
        steps: int | None = None,
        generator: Generators = None,
        seeds: Sequence[int] | None = None,
        use_ema: bool = True,
    ) -> Tensor:
        """``num`` samples ``[num, C, H, W]`` in [-1, 1] at ``resolution`` (default: the training one).

        Runs under ``torch.no_grad()`` with the EMA weights unless ``use_ema=False``; ``steps`` overrides the
        family's default number of sampler steps; all noise comes from ``generator`` when given. ``seeds``
        (one per image, exclusive with ``generator``) gives image ``k`` its own generator for all of its
        noise, so it is the same whatever the batch it is sampled in. Families add keyword arguments of
        their own after these (sampler choice, per-step callback, guidance, tile size, ...).
        """

    @property
    @abstractmethod
    def native_resolution(self) -> tuple[int, int]:
        """``(H, W)``: the grid the model trains at, and the default of ``sample()``, the evaluation
        harness and sample grids (one name for DDPM's ``image_size``, ∞-Diff's ``train_resolution``,
        INFD's ``encoder_resolution``)."""

    @classmethod
    def supported_samplers(cls) -> tuple[str, ...]:
        """The sampler names this family accepts (those registered for its ``sampler_process``)."""
        return () if cls.sampler_process is None else sampler_names(cls.sampler_process)

    def check_sampler(self, name: str) -> str:
        """``name`` if this family runs it, else the ValueError that lists :meth:`supported_samplers`."""
        if self.sampler_process is None:
            raise ValueError(f"{type(self).__name__} does not sample from noise; it has no samplers")
        return check_sampler(self.sampler_process, name)

    # ----------------------------------------------------------------- EMA
    def setup_ema(self) -> None:
        """Create the EMA copy of ``self.network`` (call at the end of the subclass ``__init__``)."""
        settings = self.ema_settings
        if settings is not None and settings.decay > 0:
            self.ema = EMA(self.network, settings.decay, settings.update_every, settings.warmup)

    def sampling_network(self, use_ema: bool = True) -> nn.Module:
        """The network to sample with: the EMA copy when there is one and ``use_ema``."""
        return self.ema.module if (use_ema and self.ema is not None) else self.network

    @contextmanager
    def eval_mode(self) -> Iterator[None]:
        """Put the module in eval mode for sampling and restore the previous mode afterwards."""
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)

    # ----------------------------------------------------------------- data checks
    def setup(self, stage: str) -> None:
        """Check the data module's data views against this model (:meth:`check_data`) before any batch."""
        datamodule = getattr(self._trainer, "datamodule", None)
        for role in ("view", "val_view"):
            view = getattr(datamodule, role, None)
            if isinstance(view, FieldView):
                self.check_data(view, role, stage)

    def check_data(self, view: FieldView, role: str, stage: str) -> None:
        """Raise a ValueError (or log one warning) when ``view``, the data module's ``role``
        (``"view"`` or ``"val_view"``), does not suit this model in ``stage``. Nothing by default."""

    def check_whole_image_data(self, view: FieldView, role: str, stage: str, image_size: int) -> None:
        """:meth:`check_data` of the families that train on whole images at ``image_size`` (DDPM, DVDP).

        A data view that selects pixels or crops is an error in every stage (the loss would silently use the
        whole grid or the crops); in ``fit``, a training view at another size is an error (the model
        would silently train at that size)."""
        from rezdiff.models.infd.views import MultiScalePatches  # lazy: the families import this module

        name = type(self).__name__
        if isinstance(view, (RandomPixels, MultiScalePatches)):
            what = "a pixel subset it would ignore" if isinstance(view, RandomPixels) else "random crops"
            raise ValueError(
                f"{name} trains on whole images, but the data's {role} is {type(view).__name__} ({what}); "
                f"set --data.init_args.{role}.class_path rezdiff.data.FullGrid"
            )
        size = view.example_resolution()
        if stage == "fit" and role == "view" and size is not None and size != (image_size, image_size):
            height, width = size
            raise ValueError(
                f"{name} has image_size={image_size}, but the data's view renders {height}x{width}, so it "
                f"would train at {height}x{width}; set the view's resolution to {image_size} or the "
                f"model's image_size to the data's"
            )

    # ----------------------------------------------------------------- Lightning steps
    def _seed(self) -> int:
        return int(os.environ.get("PL_GLOBAL_SEED", 0))

    def _generator(self, batch_idx: int, stage: str) -> torch.Generator:
        rank = self.global_rank if self._trainer is not None else 0
        step = self.global_step if stage == "train" else 0
        return step_generator(
            self._seed(), {"train": 0, "val": 1, "test": 2}[stage], step, batch_idx, rank, device=self.device
        )

    def training_step(self, batch: FieldBatch, batch_idx: int) -> Tensor:
        loss = self.loss(batch, self._generator(batch_idx, "train"))
        finite = bool(torch.isfinite(loss).item())
        if self._trainer is not None:
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            raise NonFiniteLossError(
                f"non-finite training loss ({loss.item()}) at global step {self.global_step}, epoch "
                f"{self.current_epoch}, batch {batch_idx} on some rank; training stopped before the "
                "optimiser step, and no checkpoint was written for this step. Lower the learning rate, "
                "enable gradient clipping (--trainer.gradient_clip_val 1.0) or check the data."
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=batch.batch_size)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self.network, self.global_step)

    def _eval_step(self, batch: FieldBatch, batch_idx: int, stage: str) -> Tensor:
        loss = self.loss(batch, self._generator(batch_idx, stage))
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val", sync_dist=True, batch_size=batch.batch_size)
        return loss

    def validation_step(self, batch: FieldBatch, batch_idx: int) -> Tensor:
        return self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: FieldBatch, batch_idx: int) -> Tensor:
        return self._eval_step(batch, batch_idx, "test")

    def predict_step(self, batch: SeedBatch | FieldBatch, batch_idx: int) -> Tensor:
        """``rezdiff predict``: one image per seed of a :class:`SeedBatch`, with its resolution and settings.
        A :class:`FieldBatch` (``trainer.predict`` on a datamodule) gets as many samples as it holds, at its
        resolution."""
        if isinstance(batch, SeedBatch):
            return self.sample_seeds(
                batch.seeds, batch.resolution, batch_invariant=batch.batch_invariant, **batch.options
            )
        generator = step_generator(self._seed(), 3, batch_idx, self.global_rank, device=self.device)
        return self.sample(batch.batch_size, tuple(batch.image.shape[-2:]), generator=generator)

    def sample_seeds(
        self,
        seeds: Sequence[int],
        resolution: Resolution | None = None,
        batch_invariant: bool = False,
        **options: Any,
    ) -> Tensor:
        """``sample(len(seeds), resolution, seeds=seeds, **options)``: the one place where ``rezdiff sample``
        and ``rezdiff predict`` turn seeds into a sampler's randomness; image k draws all its noise from
        ``seeds[k]``, whatever the images batched with it.

        Batched kernels round differently for different batch sizes (a convolution's blocking follows the
        batch), so an image sampled among others can differ from the same seed sampled among fewer in the
        last bits. ``batch_invariant`` samples each image in a batch of its own, so image k is bit-identical
        whatever the batch size, order or number of ranks on the same device and thread count, at the cost
        of batching."""
        if len(seeds) == 0:
            raise ValueError("sample_seeds needs at least one seed")
        seeds = [int(seed) for seed in seeds]
        if batch_invariant:
            return torch.cat([self.sample(1, resolution, seeds=[seed], **options) for seed in seeds])
        return self.sample(len(seeds), resolution, seeds=seeds, **options)

    # ----------------------------------------------------------------- optimisation
    def configure_optimizers(self) -> Any:
        """The injected ``optimizer`` over the network's parameters and, when configured, the injected
        ``lr_scheduler`` on it, stepped after every optimiser step (Lightning's ``interval="step"``)."""
        optimizer = self.optimizer_factories["optimizer"](self.network.parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ----------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from rezdiff import __version__

        cls = type(self)
        checkpoint["rezdiff"] = {"class_path": f"{cls.__module__}.{cls.__qualname__}", "version": __version__}
        checkpoint["rezdiff_rng"] = {"torch": torch.get_rng_state(), "python": random.getstate()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A resumed fit continues the global RNG streams where the checkpoint left them: per-example data
        randomness (``RandomPixels``, ``MultiScalePatches``) and CPU dropout then repeat the uninterrupted
        run (with ``num_workers=0`` or workers that are not persistent, which torch reseeds from it)."""
        state = checkpoint.get("rezdiff_rng")
        if state is not None and self._trainer is not None and self.trainer.state.fn == "fit":
            torch.set_rng_state(state["torch"])
            random.setstate(state["python"])


LEGACY_OPTIMIZATION_KEYS = (
    "lr",
    "adam_betas",
    "weight_decay",
    "warmup_steps",
    "ema_decay",
    "ema_update_every",
    "ema_warmup",
)
"""Constructor arguments of checkpoints written before the injected optimiser (read by
:meth:`DiffusionModule.upgrade_hyperparameters`)."""


def resolution_or(default: Resolution, resolution: Resolution | None) -> tuple[int, int]:
    """``resolution`` as ``(H, W)``, or the model's own when ``None``."""
    return as_hw(default if resolution is None else resolution)
