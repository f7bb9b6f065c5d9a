"""``rezdiff sample``: samples of any checkpoint at any resolution, and the inverse problems of the families.

    rezdiff sample --ckpt_path CKPT --resolution [64,128] --num 16 --out samples/   # unconditional
    rezdiff sample --ckpt_path CKPT --help                                         # + the family's settings
    rezdiff sample --ckpt_path CKPT --sampler ddim --eta 0.5 --spacing leading     # DDPM/∞-Diff settings
    rezdiff sample --ckpt_path CKPT --inpaint [a.png,b.png] --hole [-0.5,-0.5,0.5,0.5]  # ∞-Diff: fill a box
    rezdiff sample --ckpt_path CKPT --inpaint a.png --mask known.png               # ∞-Diff: white = known
    rezdiff sample --ckpt_path CKPT --super_resolve low.png --resolution [128,256] # ∞-Diff autoencoder
    rezdiff sample --ckpt_path STAGE1 --super_resolve low.png --resolution 256     # INFD stage 1 render
    rezdiff sample --ckpt_path CKPT --guide box=-1,-1,0,0,loss=color,mean=1,-1,-1 --guidance_scale 20  # INFD
    rezdiff sample --ckpt_path CKPT --resolution 1024 --tile 256 --pad 8 --norm tile  # INFD tiled render
    rezdiff sample -c sample.yaml --num 4 --print_config                           # a file, overridden

The options are parsed by jsonargparse in the dialect of ``rezdiff fit`` (:func:`parser`): ``-c`` files,
``--print_config``, underscores, lists as ``[a,b]``, flags as ``--force``/``--no_force``; the argparse
spellings of earlier releases (``--ckpt``, ``--super-resolve``, ``--resolution 64 128``, ...) still work with
one FutureWarning (:func:`rezdiff.commands.respell`). The sampler settings are not listed here: they are the
keyword-only parameters of the checkpoint's ``sample()`` (:func:`sampler_options`; a ``Literal`` becomes a
choice, a ``bool`` a ``--x/--no_x`` pair, ``null`` unsets an optional number), read after a first pass finds
``--ckpt_path`` on the command line or in a ``-c`` file; unset, each is the checkpoint's own. Image k of a
run draws its noise from seed ``--seed + k``, or from the k-th seed of ``--seeds 0-63``
(``DiffusionModule.sample_seeds``), bit for bit whatever ``--batch_size`` with ``--batch_invariant``. Before
sampling at a given ``--resolution``, one
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

from rezdiff.commands import add_flag, command_parser, hyphenated, respell
from rezdiff.data.coords import Resolution, as_hw
from rezdiff.memory import estimate_memory, format_bytes, format_seconds, free_memory

__all__ = ["SamplerOption", "estimate_memory", "sample_main", "sampler_options"]

#: ``sample()`` keywords that the fixed options of ``rezdiff sample`` already cover (``--num``,
#: ``--resolution``, ``--steps``, ``--seed``, ``--no_ema``, the progress bar, ``--guide``,
#: ``--guidance_scale``, ``--guide_raw``) or that take tensors (``z``): never derived from a signature.
FIXED = frozenset(
    {"num", "resolution", "steps", "generator", "use_ema", "progress", "z"}
    | {"guidance", "guidance_scale", "guidance_normalize"}
)


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
        return "--" + self.name

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


def _option_type(option: SamplerOption) -> Any:
    """The jsonargparse type of a sampler setting: always nullable, since unset (null) means the
    checkpoint's own setting (a setting the signature does not let be None refuses an explicit null)."""
    if option.kind == "choice":
        return Literal[option.choices] | None
    return {"int": int, "float": float, "str": str}[option.kind] | None


def _add_sampler_options(parser: Any, cls: type) -> None:
    group = parser.add_argument_group(
        f"{cls.__name__} sampler settings (from its sample() signature; unset: the checkpoint's setting)"
    )
    for option in sampler_options(cls).values():
        default = "the checkpoint's setting" if option.default is None else repr(option.default)
        text = f"{option.owner}({option.name}=...); default: {default}"
        if option.kind == "bool":
            add_flag(group, option.name, None, text)
            continue
        if option.optional and option.default is not None:
            text += " (null: unset)"
        group.add_argument(option.flag, type=_option_type(option), default=None, help=text)


def _resolution(text: str) -> int | tuple[int, int]:
    """``64`` or ``48x64``; sizes must be positive integers."""
    parts = str(text).lower().split("x")
    if len(parts) > 2:
        raise argparse.ArgumentTypeError(f"expected SIZE or HEIGHTxWIDTH (e.g. 64 or 48x64), got {text!r}")
    sizes = [_integer(part) for part in parts]
    if min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive integers (>= 1), got {text!r}")
    return sizes[0] if len(sizes) == 1 else (sizes[0], sizes[1])


def parser(model_class: type | None = None) -> Any:
    """The ``rezdiff sample`` parser (jsonargparse, the dialect of ``rezdiff fit``); with ``model_class``,
    plus that family's sampler settings."""
    parser = command_parser(
        "sample",
        "Sample any rezdiff checkpoint at any resolution, or solve an inverse problem with it. "
        "`rezdiff sample --ckpt_path CKPT --help` also lists the sampler settings of the checkpoint's "
        "family.",
    )
    parser.add_argument("--ckpt_path", type=str, required=True, help="checkpoint written by `rezdiff fit`")
    parser.add_argument(
        "--resolution",
        type=int | str | list[int | str] | None,
        default=None,
        help="one size or a list, e.g. 64, 48x64 or [64,128] (default: the training size; inpainting: the "
        "images' own size)",
    )
    parser.add_argument("--num", type=int, default=16, help="samples per resolution (unconditional, guided)")
    parser.add_argument("--steps", type=int | None, default=None, help="sampler steps (default: the model's)")
    parser.add_argument(
        "--seed", type=int, default=0, help="image k is keyed by seed SEED + k (DiffusionModule.sample_seeds)"
    )
    parser.add_argument(
        "--seeds",
        type=int | str | None,
        default=None,
        help="one image per seed, e.g. 0-63 or 0-9,100 (instead of --num/--seed); files are named by seed",
    )
    parser.add_argument("--batch_size", type=int, default=16, help="images sampled together")
    add_flag(
        parser,
        "batch_invariant",
        False,
        "sample every image in a batch of its own: image k is then bit-identical whatever --batch_size "
        "(batched kernels round by batch size), at the cost of batching",
    )
    parser.add_argument("--out", type=str, default="samples", help="output folder")
    parser.add_argument(
        "--device", type=str, default="auto", help="cpu, cuda, cuda:1, ... (auto: cuda if present)"
    )
    add_flag(parser, "ema", True, "sample with the EMA weights (--no_ema: the raw weights)")
    add_flag(
        parser,
        "force",
        False,
        "sample even when the estimated memory of a batch exceeds the device's free memory",
    )
    if model_class is not None:
        _add_sampler_options(parser, model_class)
        accepted = " ".join(option.flag for option in sampler_options(model_class).values())
        parser.unrecognized_hint = (
            f"{model_class.__name__} accepts the sampler settings {accepted or '(none)'}; "
            "`rezdiff sample --ckpt_path CKPT --help` lists them"
        )
    inverse = parser.add_argument_group("inverse problems (one of --inpaint, --super_resolve, --guide)")
    images = str | list[str] | None
    inverse.add_argument(
        "--inpaint", type=images, default=None, help="∞-Diff: fill the unknown pixels of IMAGE or [IMAGE,...]"
    )
    inverse.add_argument(
        "--super_resolve",
        type=images,
        default=None,
        help="IMAGE or [IMAGE,...]; ∞-Diff diffusion autoencoder: sample at --resolution conditioned on the "
        "code of each image; INFD stage 1 (INFDAutoencoder): its reconstruction rendered at --resolution",
    )
    inverse.add_argument(
        "--guide",
        type=images,
        default=None,
        help="INFD box guidance, SPEC or '[\"SPEC\", ...]': box=X0,Y0,X1,Y1[,res=32][,weight=1],loss=color,"
        "mean=R,G,B[,std=R,G,B] or ...,loss=ref,image=PATH (box in [-1, 1] image coordinates)",
    )
    inverse.add_argument(
        "--mask",
        type=str | None,
        default=None,
        help="inpainting: known pixels are white (> 50% grey)",
    )
    inverse.add_argument(
        "--hole",
        type=tuple[float, float, float, float] | None,
        default=None,
        help="inpainting: the box to fill, [X0,Y0,X1,Y1] in [-1, 1] coordinates",
    )
    inverse.add_argument(
        "--guidance_scale",
        type=float,
        default=1.0,
        help="inpainting: fraction of the known-pixel correction per step (1 = full); "
        "guidance: the DPS step size",
    )
    add_flag(inverse, "guide_raw", False, "guidance: step on L, not on sqrt(L)")
    add_flag(inverse, "paste_known", False, "inpainting: copy known pixels back")
    return parser


def _device(name: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def _checkpoint_and_device(args: list[str]) -> tuple[str | None, str]:
    """``--ckpt_path`` (or the old ``--ckpt``) and ``--device`` as the arguments and ``-c`` files set them,
    the last one winning as in the full parse: the checkpoint decides which sampler settings it parses."""
    import yaml

    ckpt, device = None, "auto"
    i = 0
    while i < len(args):
        name, equals, value = args[i].partition("=")
        i += 1
        if name not in ("--ckpt", "--ckpt_path", "--device", "-c", "--config"):
            continue
        if not equals:
            value = args[i] if i < len(args) else ""
            i += 1
        if name in ("-c", "--config"):
            try:
                config = yaml.safe_load(Path(value).read_text())
            except (OSError, yaml.YAMLError):  # the full parse names the file
                continue
            if isinstance(config, dict):
                ckpt = str(config["ckpt_path"]) if config.get("ckpt_path") else ckpt
                device = str(config.get("device") or device)
        elif name == "--device":
            device = value
        else:
            ckpt = value
    return ckpt, device


def _load(args: list[str]) -> Any:
    """The model of ``--ckpt_path`` (first pass over the arguments), or None when none was given."""
    ckpt, device = _checkpoint_and_device(args)
    if not ckpt:
        return None
    from rezdiff import loading

    try:
        return loading.load(ckpt, map_location=_device(device))
    except (FileNotFoundError, loading.CheckpointError) as error:
        parser().error(f"--ckpt_path: {error}")


#: What ``rezdiff sample`` took as space-separated lists, repeated options or comma-separated words before
#: it parsed with jsonargparse (see :func:`rezdiff.commands.respell`).
OLD_LISTS = ("--resolution", "--inpaint", "--super_resolve")
OLD_RENAMES = {"--ckpt": "--ckpt_path", "--tile-norm": "--norm", "--tile_norm": "--norm"}


def _respelled(parser_: Any, model_class: type | None, args: list[str]) -> list[str]:
    options = [name for name in parser_._option_string_actions if name.startswith("--")]
    nullable = [o.flag for o in sampler_options(model_class).values() if o.optional] if model_class else []
    try:
        return respell(
            "sample",
            args,
            {**hyphenated(options), **OLD_RENAMES},
            lists=OLD_LISTS,
            appends=("--guide",),
            commas=("--hole",),
            nullable=nullable,
        )
    except ValueError as error:
        parser_.error(str(error))


def _as_list(value: Any) -> list[Any] | None:
    if value is None:
        return None
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _positive(parser_: Any, name: str, value: int | None) -> int | None:
    if value is not None and value < 1:
        parser_.error(f"--{name}: must be a positive integer (>= 1), got {value}")
    return value


def _sampler_setting(parser_: Any, option: SamplerOption, value: Any) -> Any:
    """A parsed sampler setting, checked as :meth:`SamplerOption.convert` checks text."""
    if value is None and not option.optional:
        parser_.error(
            f"{option.flag}: null is not accepted ({option.owner} needs a value); leave it out instead"
        )
    if option.kind == "int" and option.name.endswith("steps"):
        _positive(parser_, option.name, value)
    if option.kind == "float" and value is not None and not math.isfinite(value):
        parser_.error(f"{option.flag}: must be a finite number, got {value}")
    return value


def parse(parser_: Any, model_class: type | None, args: list[str]) -> argparse.Namespace:
    """The options of ``rezdiff sample ARGS`` as the sampling functions read them (one namespace): the fixed
    options and the sampler settings that were given (those left out stay the checkpoint's)."""
    argv = _respelled(parser_, model_class, args)
    config = parser_.parse_args(argv)
    given = parser_.parse_args(argv, defaults=False)
    resolutions = _as_list(config.resolution)
    try:
        resolution = [_resolution(r) for r in resolutions] if resolutions else None
    except argparse.ArgumentTypeError as error:
        parser_.error(f"--resolution: {error}")
    options = argparse.Namespace(
        ckpt=config.ckpt_path,
        resolution=resolution,
        num=_positive(parser_, "num", config.num),
        steps=_positive(parser_, "steps", config.steps),
        seed=config.seed,
        seeds=None if config.seeds is None else str(config.seeds),
        batch_size=_positive(parser_, "batch_size", config.batch_size),
        batch_invariant=bool(config.batch_invariant),
        out=config.out,
        device=config.device,
        no_ema=not config.ema,
        force=bool(config.force),
        inpaint=_as_list(config.inpaint),
        super_resolve=_as_list(config.super_resolve),
        guide=_as_list(config.guide),
        mask=config.mask,
        hole=tuple(config.hole) if config.hole is not None else None,
        guidance_scale=config.guidance_scale,
        guide_raw=bool(config.guide_raw),
        paste_known=bool(config.paste_known),
    )
    for name, option in sampler_options(model_class).items() if model_class else ():
        if name in given:
            setattr(options, name, _sampler_setting(parser_, option, given[name]))
    tasks = [flag for flag in ("inpaint", "super_resolve", "guide") if getattr(options, flag)]
    if len(tasks) > 1:
        parser_.error(f"--{tasks[0]} and --{tasks[1]} are exclusive: give one inverse problem per run")
    if options.mask and options.hole:
        parser_.error("--mask and --hole are exclusive: give the known pixels one way")
    return options


def sample_main(args: list[str]) -> list[Path]:
    """Run ``rezdiff sample``; returns the files written."""
    model = _load(args)
    parser_ = parser(type(model) if model is not None else None)
    options = parse(parser_, type(model) if model is not None else None, args)
    if options.inpaint and not (options.mask or options.hole):
        parser_.error("--inpaint needs --mask IMAGE or --hole [X0,Y0,X1,Y1]")
    if (options.mask or options.hole or options.paste_known) and not options.inpaint:
        parser_.error("--mask, --hole and --paste_known go with --inpaint")
    if options.super_resolve and not options.resolution:
        parser_.error("--super_resolve needs --resolution (the size(s) to sample at)")
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
                "reconstructions with --super_resolve IMAGE --resolution R, or sample its second stage"
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
    batch = 1 if options.batch_invariant else min(options.batch_size, options.num)  # one image a call
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
    if options.batch_invariant:
        batched, lower = "--batch_invariant (one image at a time)", "--resolution"
    else:
        batched, lower = f"--batch_size {batch}", "--batch_size or --resolution"
    parser_.error(
        f"--resolution {height}x{width} with {batched}: estimated {size} (about {step} per step), "
        f"but {device} has {format_bytes(free)} free; lower {lower}{tiling}, or pass "
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
    one image per seed of ``--seeds``, named by its seed: an image is the same whatever ``--batch_size`` up to
    kernel rounding, and bit for bit with ``--batch_invariant``."""
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
    """``--super_resolve`` with a stage-1 autoencoder (``model.reconstruct``): encode each image and render
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
        parser().error(f"--inpaint and --super_resolve need an ∞-Diff checkpoint, got {type(model).__name__}")
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
    task, flag = (inpaint, "--inpaint") if options.inpaint else (super_resolve, "--super_resolve")
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
