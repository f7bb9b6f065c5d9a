"""``rezdiff sample``: samples of any checkpoint at any resolution, and the inverse problems of the families.

    rezdiff sample --ckpt CKPT --resolution 64 128 --num 16 --out samples/        # unconditional
    rezdiff sample --ckpt CKPT --help                                             # + the family's settings
    rezdiff sample --ckpt CKPT --sampler ddim --eta 0.5 --spacing leading         # DDPM/∞-Diff settings
    rezdiff sample --ckpt CKPT --inpaint a.png b.png --hole=-0.5,-0.5,0.5,0.5    # ∞-Diff: fill a box
    rezdiff sample --ckpt CKPT --inpaint a.png --mask known.png                   # ∞-Diff: white = known
    rezdiff sample --ckpt CKPT --super-resolve low.png --resolution 128 256       # ∞-Diff autoencoder
    rezdiff sample --ckpt STAGE1 --super-resolve low.png --resolution 256         # INFD stage 1 render
    rezdiff sample --ckpt CKPT --guide box=-1,-1,0,0,loss=color,mean=1,-1,-1 --guidance-scale 20  # INFD
    rezdiff sample --ckpt CKPT --resolution 1024 --tile 256 --pad 8 --tile-norm tile  # INFD tiled render

The sampler settings are not listed here: they are the keyword-only parameters of the checkpoint's
``sample()`` (:func:`sampler_options`; a ``Literal`` becomes a choice, a ``bool`` a ``--x/--no-x`` pair,
``none`` unsets an optional number), read after a first pass finds ``--ckpt``; unset, each is the
checkpoint's own. Image k of a run draws its noise from seed ``--seed + k``, or from the k-th seed of
``--seeds 0-63`` (``DiffusionModule.sample_seeds``), bit for bit whatever ``--batch-size`` with
``--batch-invariant``. Before sampling at a given ``--resolution``, one
sampler step of one image is probed at the training size and at twice it and the batch's memory
extrapolated (:func:`rezdiff.memory.estimate_memory`); a batch estimated beyond the device's free memory is
refused unless ``--force``.
User errors are one line on stderr with exit status 2.

Unconditional and guided runs write ``<out>/<H>x<W>/sample_#####.png`` and ``<out>/grid_<H>x<W>.png``;
inpainting and super-resolution write ``<out>/<H>x<W>/<input name>.png`` (inpainting also
``<input name>_known.png``, the known pixels over grey) and the grid of the results. The heavy lifting is in
the families' folders (:mod:`rezdiff.models.infty_diff.inverse`, :mod:`rezdiff.models.infd.guidance`); this
module only reads files and options (it is longer than ~400 lines because
the option derivation and the three kinds of run share its parser; splitting them would split one command).
"""

from __future__ import annotations

import argparse
import inspect
import math
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import torch
from torch import Tensor

from rezdiff.data.coords import Resolution, as_hw
from rezdiff.memory import estimate_memory, format_bytes, format_seconds, free_memory

__all__ = ["SamplerOption", "estimate_memory", "sample_main", "sampler_options"]

#: ``sample()`` keywords that the fixed options of ``rezdiff sample`` already cover (``--num``,
#: ``--resolution``, ``--steps``, ``--seed``, ``--no-ema``, the progress bar, ``--guide``,
#: ``--guidance-scale``, ``--guide-raw``) or that take tensors (``z``): never derived from a signature.
FIXED = frozenset(
    {"num", "resolution", "steps", "generator", "use_ema", "progress", "z"}
    | {"guidance", "guidance_scale", "guidance_normalize"}
)
#: Extra spellings of derived options that earlier releases documented.
ALIASES = {"norm": ("--tile-norm",)}


@dataclass(frozen=True)
class SamplerOption:
    """One keyword of a family's ``sample()`` (or its autoencoder's ``render()``) as a command-line option.

    ``kind`` is ``"bool"``, ``"int"``, ``"float"``, ``"str"`` or ``"choice"`` (a ``Literal``, whose values are
    ``choices``); ``optional`` says ``None`` is accepted; ``default`` is the signature's default (``None``:
    the checkpoint's own setting).
    """

    name: str
    kind: str
    choices: tuple[Any, ...] = ()
    optional: bool = False
    default: Any = None
    owner: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def convert(self, text: str) -> Any:
        """The value of ``text`` for this option; ``none`` passes ``None`` where the signature allows it."""
        if self.optional and text.lower() == "none":
            return None
        if self.kind == "choice":
            by_text = {str(choice): choice for choice in self.choices}
            if text not in by_text:
                raise argparse.ArgumentTypeError(
                    f"must be one of {', '.join(by_text)}{', none' if self.optional else ''}; got {text!r}"
                )
            return by_text[text]
        if self.kind == "int":
            value = _integer(text)
            if self.name.endswith("steps") and value < 1:
                raise argparse.ArgumentTypeError(f"must be a positive integer (>= 1), got {value}")
            return value
        if self.kind == "float":
            try:
                number = float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
            if not math.isfinite(number):
                raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
            return number
        return text


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def _describe(annotation: Any) -> tuple[str, tuple[Any, ...], bool] | None:
    """``(kind, choices, optional)`` of a type annotation that a command line can express, else None."""
    optional = False
    if get_origin(annotation) in (Union, types.UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        optional = len(members) < len(get_args(annotation))
        if len(members) != 1:
            return None
        annotation = members[0]
    if get_origin(annotation) is Literal:
        return "choice", tuple(get_args(annotation)), optional
    names = {bool: "bool", int: "int", float: "float", str: "str"}
    return (names[annotation], (), optional) if annotation in names else None


def _annotations(function: Callable[..., Any]) -> dict[str, Any]:
    """The evaluated annotations of ``function``, one by one, so that a name a module imports only for type
    checkers (a tensor type) loses that parameter alone."""
    module = sys.modules.get(function.__module__)
    namespace = {**vars(typing), **(vars(module) if module else {})}
    resolved = {}
    for name, annotation in getattr(function, "__annotations__", {}).items():
        try:
            resolved[name] = eval(annotation, namespace) if isinstance(annotation, str) else annotation
        except Exception:  # an annotation the command line could not express anyway
            continue
    return resolved


def _option_sources(cls: type) -> list[Callable[..., Any]]:
    """The methods whose keyword-only parameters are the family's sampler settings: ``sample``, and for a
    stage-1 autoencoder (``reconstruct(images, resolution, **render)``) its ``render``."""
    sources = [cls.sample]
    if hasattr(cls, "reconstruct") and callable(getattr(cls, "render", None)):
        sources.append(cls.render)
    return sources


def sampler_options(cls: type) -> dict[str, SamplerOption]:
    """The sampler settings a family's ``sample()`` accepts beyond the common ones (:data:`FIXED`), read
    from its signature: a keyword a family adds appears in ``rezdiff sample`` without touching the CLI."""
    options: dict[str, SamplerOption] = {}
    registered = cls.supported_samplers() if hasattr(cls, "supported_samplers") else ()
    for function in _option_sources(cls):
        hints = _annotations(function)
        for parameter in inspect.signature(function).parameters.values():
            if parameter.kind is not parameter.KEYWORD_ONLY or parameter.name in FIXED | options.keys():
                continue
            described = _describe(hints.get(parameter.name))
            if described is None:
                continue
            kind, choices, optional = described
            if parameter.name == "sampler" and registered:
                kind, choices = "choice", tuple(registered)  # the registry's names at parse time
            default = None if parameter.default is parameter.empty else parameter.default
            owner = f"{cls.__name__}.{function.__name__}"
            options[parameter.name] = SamplerOption(parameter.name, kind, choices, optional, default, owner)
    return options


def _add_sampler_options(parser: argparse.ArgumentParser, cls: type) -> None:
    group = parser.add_argument_group(
        f"{cls.__name__} sampler settings (from its sample() signature; unset: the checkpoint's setting)"
    )
    for option in sampler_options(cls).values():
        flags = [option.flag, *ALIASES.get(option.name, ())]
        default = "the checkpoint's setting" if option.default is None else repr(option.default)
        text = f"{option.owner}({option.name}=...); default: {default}"
        if option.kind == "bool":
            group.add_argument(
                *flags, dest=option.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                help=text,
            )  # fmt: skip
            continue
        metavar = (
            "{" + ",".join(map(str, option.choices)) + "}" if option.kind == "choice" else option.kind.upper()
        )
        if option.optional and option.default is not None:
            text += " (none: unset)"
        group.add_argument(
            *flags,
            dest=option.name,
            type=option.convert,
            default=argparse.SUPPRESS,
            metavar=metavar,
            help=text,
        )


class UsageError(SystemExit):
    """A user error of ``rezdiff sample``: exit status 2 (argparse's) and the one-line message as ``str``."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line on stderr (no usage block) raised as :class:`UsageError`."""

    def error(self, message: str) -> typing.NoReturn:  # type: ignore[override]
        line = f"{self.prog}: error: {message}"
        print(line, file=sys.stderr)
        raise UsageError(line)


def _resolution(text: str) -> int | tuple[int, int]:
    """``64`` or ``48x64``; sizes must be positive integers."""
    parts = text.lower().split("x")
    if len(parts) > 2:
        raise argparse.ArgumentTypeError(f"expected SIZE or HEIGHTxWIDTH (e.g. 64 or 48x64), got {text!r}")
    sizes = [_integer(part) for part in parts]
    if min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive integers (>= 1), got {text!r}")
    return sizes[0] if len(sizes) == 1 else (sizes[0], sizes[1])


def _positive(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (>= 1), got {value}")
    return value


def _box(text: str) -> tuple[float, float, float, float]:
    values = [float(v) for v in text.split(",")]
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"expected X0,Y0,X1,Y1 in [-1, 1], got {text!r}")
    return values[0], values[1], values[2], values[3]


def parser(model_class: type | None = None) -> argparse.ArgumentParser:
    """The ``rezdiff sample`` parser; with ``model_class``, plus that family's sampler settings."""
    parser = _Parser(
        prog="rezdiff sample",
        description="Sample any rezdiff checkpoint at any resolution, or solve an inverse problem with it. "
        "`rezdiff sample --ckpt CKPT --help` also lists the sampler settings of the checkpoint's family.",
    )
    parser.add_argument("--ckpt", required=True, help="checkpoint written by `rezdiff fit`")
    parser.add_argument(
        "--resolution",
        type=_resolution,
        nargs="+",
        default=None,
        help="one or more sizes, e.g. 64 128 or 48x64 (default: the training size; inpainting: the "
        "images' own size)",
    )
    parser.add_argument(
        "--num", type=_positive, default=16, help="samples per resolution (unconditional, guided)"
    )
    parser.add_argument("--steps", type=_positive, default=None, help="sampler steps (default: the model's)")
    parser.add_argument(
        "--seed", type=int, default=0, help="image k is keyed by seed SEED + k (DiffusionModule.sample_seeds)"
    )
    parser.add_argument(
        "--seeds",
        default=None,
        help="one image per seed, e.g. 0-63 or 0-9,100 (instead of --num/--seed); files are named by seed",
    )
    parser.add_argument("--batch-size", type=_positive, default=16)
    parser.add_argument(
        "--batch-invariant",
        action="store_true",
        help="sample every image in a batch of its own: image k is then bit-identical whatever --batch-size "
        "(batched kernels round by batch size), at the cost of batching",
    )
    parser.add_argument("--out", default="samples", help="output folder")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (auto: cuda if present)")
    parser.add_argument("--no-ema", action="store_true", help="sample with the raw weights, not the EMA")
    parser.add_argument(
        "--force",
        action="store_true",
        help="sample even when the estimated memory of a batch exceeds the device's free memory",
    )
    if model_class is not None:
        _add_sampler_options(parser, model_class)
    inverse = parser.add_argument_group("inverse problems (one of --inpaint, --super-resolve, --guide)")
    task = inverse.add_mutually_exclusive_group()
    task.add_argument("--inpaint", nargs="+", metavar="IMAGE", help="∞-Diff: fill the unknown pixels")
    task.add_argument(
        "--super-resolve",
        nargs="+",
        metavar="IMAGE",
        help="∞-Diff diffusion autoencoder: sample at --resolution conditioned on the code of each image; "
        "INFD stage 1 (INFDAutoencoder): its reconstruction rendered at --resolution",
    )
    task.add_argument(
        "--guide",
        action="append",
        metavar="SPEC",
        help="INFD box guidance, repeatable: box=X0,Y0,X1,Y1[,res=32][,weight=1],loss=color,mean=R,G,B"
        "[,std=R,G,B] or ...,loss=ref,image=PATH (box in [-1, 1] image coordinates)",
    )
    known = inverse.add_mutually_exclusive_group()
    known.add_argument("--mask", metavar="IMAGE", help="inpainting: known pixels are white (> 50%% grey)")
    known.add_argument(
        "--hole",
        type=_box,
        metavar="X0,Y0,X1,Y1",
        help="inpainting: the box to fill, in [-1, 1] coordinates (write --hole=-0.5,... for negative X0)",
    )
    inverse.add_argument(
        "--guidance-scale",
        type=float,
        default=1.0,
        help="inpainting: fraction of the known-pixel correction per step (1 = full); "
        "guidance: the DPS step size",
    )
    inverse.add_argument("--guide-raw", action="store_true", help="guidance: step on L, not on sqrt(L)")
    inverse.add_argument("--paste-known", action="store_true", help="inpainting: copy known pixels back")
    return parser


def _device(name: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def _load(args: list[str]) -> Any:
    """The model of ``--ckpt`` (first pass over the arguments), or None when no ``--ckpt`` was given."""
    first = _Parser(prog="rezdiff sample", add_help=False)
    first.add_argument("--ckpt")
    first.add_argument("--device", default="auto")
    known, _ = first.parse_known_args(args)
    if not known.ckpt:
        return None
    from rezdiff import loading

    try:
        return loading.load(known.ckpt, map_location=_device(known.device))
    except (FileNotFoundError, loading.CheckpointError) as error:
        parser().error(f"--ckpt: {error}")


def sample_main(args: list[str]) -> list[Path]:
    """Run ``rezdiff sample``; returns the files written."""
    model = _load(args)
    parser_ = parser(type(model) if model is not None else None)
    options, unknown = parser_.parse_known_args(args)
    if unknown:
        accepted = " ".join(option.flag for option in sampler_options(type(model)).values())
        parser_.error(
            f"unrecognized arguments: {' '.join(unknown)} ({type(model).__name__} accepts the sampler "
            f"settings {accepted or '(none)'}; `rezdiff sample --ckpt CKPT --help` lists them)"
        )
    if options.inpaint and not (options.mask or options.hole):
        parser_.error("--inpaint needs --mask IMAGE or --hole X0,Y0,X1,Y1")
    if (options.mask or options.hole or options.paste_known) and not options.inpaint:
        parser_.error("--mask, --hole and --paste-known go with --inpaint")
    if options.super_resolve and not options.resolution:
        parser_.error("--super-resolve needs --resolution (the size(s) to sample at)")
    if options.seeds is not None:
        from rezdiff.callbacks.predictions import parse_seeds

        try:
            options.seed_list = parse_seeds(options.seeds, "--seeds")
        except ValueError as error:
            parser_.error(str(error))
        options.num = len(options.seed_list)
    else:
        options.seed_list = None
    settings = {
        name: getattr(options, name) for name in sampler_options(type(model)) if hasattr(options, name)
    }
    out = Path(options.out)
    try:
        if options.super_resolve and hasattr(model, "reconstruct"):
            return _reconstruct(model, options, out, settings)
        if options.inpaint or options.super_resolve:
            return _image_to_image(model, options, out, settings)
        guidance: dict[str, Any] = {}
        if options.guide:
            from rezdiff.models.infd.guidance import parse_condition

            if "guidance" not in inspect.signature(model.sample).parameters:
                parser_.error(f"{type(model).__name__} does not support --guide (INFD does)")
            channels = int(getattr(model, "channels", 3))
            try:
                conditions = [parse_condition(spec, channels) for spec in options.guide]
            except ValueError as error:
                parser_.error(f"--guide: {error}")
            guidance = {
                "guidance": conditions,
                "guidance_scale": options.guidance_scale,
                "guidance_normalize": not options.guide_raw,
            }
        if hasattr(model, "reconstruct"):
            parser_.error(
                f"{type(model).__name__} is an autoencoder, it cannot sample from noise; render "
                "reconstructions with --super-resolve IMAGE ... --resolution R, or sample its second stage"
            )
        _check_memory(parser_, model, options, {**settings, **guidance})
        return _unconditional(model, options, out, {**settings, **guidance})
    except ValueError as error:  # a setting the family rejects (a size its network cannot take, ...)
        parser_.error(f"{type(model).__name__}: {error}")


def _check_memory(
    parser_: argparse.ArgumentParser, model: Any, options: argparse.Namespace, settings: dict[str, Any]
) -> None:
    """Refuse (unless ``--force``) a batch whose estimated memory exceeds the device's free memory."""
    if options.force or not options.resolution:
        return
    device = torch.device(model.device)
    free = free_memory(device)
    if free is None:
        return
    batch = min(options.batch_size, options.num)
    largest = max(options.resolution, key=lambda r: math.prod(as_hw(r)))
    try:
        estimate = estimate_memory(model, largest, batch, settings)
    except ValueError:  # a setting the family rejects: sampling itself will say which
        return
    if estimate.bytes <= free:
        return
    height, width = as_hw(largest)
    tiling = " or render in smaller tiles (--tile N)" if "tile" in sampler_options(type(model)) else ""
    size, step = format_bytes(estimate.bytes), format_seconds(estimate.seconds_per_step)
    parser_.error(
        f"--resolution {height}x{width} with --batch-size {batch}: estimated {size} (about {step} per step), "
        f"but {device} has {format_bytes(free)} free; lower --batch-size or --resolution{tiling}, or pass "
        "--force to try anyway"
    )


def _save(images: Tensor, names: list[str], folder: Path, grid: Path | None) -> list[Path]:
    """One PNG per image in ``folder`` and, unless ``grid`` is None, their grid."""
    from rezdiff.data.images import save_image

    written = []
    for image, name in zip(images, names, strict=True):
        written.append(folder / f"{name}.png")
        save_image(image, written[-1])
    if grid is not None:
        written.append(grid)
        save_image(images, grid)
    return written


def _unconditional(
    model: Any, options: argparse.Namespace, out: Path, settings: dict[str, Any]
) -> list[Path]:
    """``--num`` images per ``--resolution``, image k keyed by seed ``--seed + k`` (see ``sample_seeds``), or
    one image per seed of ``--seeds``, named by its seed: an image is the same whatever ``--batch-size`` up to
    kernel rounding, and bit for bit with ``--batch-invariant``."""
    from tqdm.auto import tqdm

    written: list[Path] = []
    resolutions = options.resolution or [None]
    progress = None  # opened after the first batch, so that a setting the family rejects is the only output
    for resolution in resolutions:
        batches = []
        all_seeds = options.seed_list or range(options.seed, options.seed + options.num)
        for start in range(0, options.num, options.batch_size):
            seeds = all_seeds[start : start + options.batch_size]
            batch = model.sample_seeds(
                seeds,
                resolution,
                batch_invariant=options.batch_invariant,
                steps=options.steps,
                use_ema=not options.no_ema,
                **settings,
            )
            batches.append(batch.cpu())
            if progress is None:
                progress = tqdm(total=options.num * len(resolutions), desc="sampling", unit="img")
            progress.update(len(seeds))
        images = torch.cat(batches)
        folder = out / f"{images.shape[-2]}x{images.shape[-1]}"
        if options.seed_list:
            names = [f"seed{seed:06d}" for seed in options.seed_list]
        else:
            names = [f"sample_{i:05d}" for i in range(len(images))]
        written += _save(images, names, folder, out / f"grid_{folder.name}.png")
    if progress is not None:
        progress.close()
    print(f"wrote {options.num} samples per resolution and {len(resolutions)} grid(s) to {out}")
    return written


def _reconstruct(model: Any, options: argparse.Namespace, out: Path, settings: dict[str, Any]) -> list[Path]:
    """``--super-resolve`` with a stage-1 autoencoder (``model.reconstruct``): encode each image and render
    its decoding at every ``--resolution`` with the render settings given; deterministic, so ``--seed`` and
    ``--steps`` do not apply."""
    from rezdiff.data.images import load_image

    paths = [Path(p) for p in options.super_resolve]
    images = [load_image(path, channels=int(getattr(model, "channels", 3))) for path in paths]
    written: list[Path] = []
    with torch.no_grad():
        for resolution in options.resolution:
            results = [
                model.reconstruct(image[None].to(model.device), resolution, **settings).cpu()
                for image in images
            ]
            folder = out / "{}x{}".format(*as_hw(resolution))
            written += _save(
                torch.cat(results), [p.stem for p in paths], folder, out / f"grid_{folder.name}.png"
            )
    print(f"wrote {len(images)} reconstruction(s) per resolution to {out}")
    return written


def _pixel_model(model: Any) -> Any:
    """The pixel-space ∞-Diff model of a checkpoint: itself, or the stage 1 of an ``InftyDiffLatent``."""
    from rezdiff.models.infty_diff import InftyDiff

    candidate = getattr(model, "stage1", model)
    if not isinstance(candidate, InftyDiff):
        parser().error(f"--inpaint and --super-resolve need an ∞-Diff checkpoint, got {type(model).__name__}")
    return candidate


def _hole_mask(box: tuple[float, float, float, float], resolution: tuple[int, int]) -> Tensor:
    """1 = known, 0 inside the box (pixel centres within ``[x0, x1] x [y0, y1]``)."""
    from rezdiff.data.coords import pixel_centers

    centers = pixel_centers(resolution)  # [H, W, 2] as (x, y)
    x, y = centers[..., 0], centers[..., 1]
    inside = (x >= box[0]) & (x <= box[2]) & (y >= box[1]) & (y <= box[3])
    return (~inside).float()


def _image_to_image(
    model: Any, options: argparse.Namespace, out: Path, settings: dict[str, Any]
) -> list[Path]:
    from rezdiff.data.images import load_image, resize
    from rezdiff.models.infty_diff.inverse import inpaint, super_resolve

    pixel_model = _pixel_model(model)
    task, flag = (inpaint, "--inpaint") if options.inpaint else (super_resolve, "--super-resolve")
    accepted = inspect.signature(task).parameters
    refused = [sampler_options(type(model))[name].flag for name in settings if name not in accepted]
    if refused:
        parser().error(f"{flag} does not take {', '.join(refused)}; drop it")
    paths = [Path(p) for p in options.inpaint or options.super_resolve]
    images = [load_image(path, channels=pixel_model.channels) for path in paths]
    names = [path.stem for path in paths]
    written: list[Path] = []
    common = {"steps": options.steps, "use_ema": not options.no_ema, **settings}
    if options.super_resolve:
        for resolution in options.resolution:
            results = [  # image k draws its noise from seed --seed + k
                super_resolve(pixel_model, image[None], resolution, seeds=[options.seed + k], **common).cpu()
                for k, image in enumerate(images)
            ]
            folder = out / "{}x{}".format(*as_hw(resolution))
            written += _save(torch.cat(results), names, folder, out / f"grid_{folder.name}.png")
        print(f"wrote {len(images)} super-resolved image(s) per resolution to {out}")
        return written
    if options.resolution is None and len({tuple(image.shape) for image in images}) > 1:
        parser().error("--inpaint images of different sizes need --resolution")
    mask_image = load_image(options.mask, channels=1) if options.mask else None
    for resolution in options.resolution or [None]:
        results, shown = [], []
        for k, image in enumerate(images):
            size: Resolution = as_hw(resolution) if resolution is not None else tuple(image.shape[-2:])
            image = resize(image, size)
            if mask_image is not None:
                mask = (resize(mask_image, size, "area") > 0).float()[0]
            else:
                mask = _hole_mask(options.hole, as_hw(size))
            filled = inpaint(
                pixel_model,
                image[None],
                mask,
                guidance_scale=options.guidance_scale,
                seeds=[options.seed + k],
                paste_known=options.paste_known,
                **common,
            )
            results.append(filled.cpu())
            shown.append(image * mask)  # unknown pixels grey (0 in [-1, 1])
        folder = out / "{}x{}".format(*results[0].shape[-2:])
        written += _save(torch.cat(results), names, folder, out / f"grid_{folder.name}.png")
        written += _save(torch.stack(shown), [f"{name}_known" for name in names], folder, None)
    print(f"wrote {len(images)} inpainted image(s) per resolution to {out}")
    return written
