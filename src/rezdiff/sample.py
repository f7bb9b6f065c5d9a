"""``rezdiff sample``: samples of any checkpoint at any resolution, and the inverse problems of the families.

    rezdiff sample --ckpt CKPT --resolution 64 128 --num 16 --out samples/        # unconditional
    rezdiff sample --ckpt CKPT --inpaint a.png b.png --hole=-0.5,-0.5,0.5,0.5    # ∞-Diff: fill a box
    rezdiff sample --ckpt CKPT --inpaint a.png --mask known.png                   # ∞-Diff: white = known
    rezdiff sample --ckpt CKPT --super-resolve low.png --resolution 128 256       # ∞-Diff autoencoder
    rezdiff sample --ckpt STAGE1 --super-resolve low.png --resolution 256         # INFD stage 1 render
    rezdiff sample --ckpt CKPT --guide box=-1,-1,0,0,loss=color,mean=1,-1,-1 --guidance-scale 20  # INFD
    rezdiff sample --ckpt CKPT --resolution 1024 --tile 256 --pad 8 --tile-norm tile  # INFD tiled render

Unconditional and guided runs write ``<out>/<H>x<W>/sample_#####.png`` and ``<out>/grid_<H>x<W>.png``;
inpainting and super-resolution write ``<out>/<H>x<W>/<input name>.png`` (inpainting also
``<input name>_known.png``, the known pixels over grey) and the grid of the results. The heavy lifting is in
:mod:`rezdiff.inverse`; this module only reads files and options.
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path
from typing import Any, get_args

import torch
from torch import Tensor

from rezdiff.core.schedules import TimestepSpacing
from rezdiff.data.coords import Resolution, as_hw

__all__ = ["sample_main"]


def _resolution(text: str) -> int | tuple[int, int]:
    if "x" in text:
        height, width = text.lower().split("x")
        return int(height), int(width)
    return int(text)


def _box(text: str) -> tuple[float, float, float, float]:
    values = [float(v) for v in text.split(",")]
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"expected X0,Y0,X1,Y1 in [-1, 1], got {text!r}")
    return values[0], values[1], values[2], values[3]


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rezdiff sample",
        description="Sample any rezdiff checkpoint at any resolution, or solve an inverse problem with it.",
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
    parser.add_argument("--num", type=int, default=16, help="samples per resolution (unconditional, guided)")
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's)")
    parser.add_argument(
        "--spacing",
        choices=get_args(TimestepSpacing),
        default=None,
        help="which timesteps strided sampling visits (default: the model's; inpainting: linspace; 'leading' "
        "does not start at T-1, where the initial pure noise belongs)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default="samples", help="output folder")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (auto: cuda if present)")
    parser.add_argument("--no-ema", action="store_true", help="sample with the raw weights, not the EMA")
    render = parser.add_argument_group("INFD rendering (tiles of large outputs)")
    render.add_argument("--tile", type=int, default=None, help="tile size in pixels, 0 = one whole render")
    render.add_argument("--pad", type=int, default=None, help="context pixels around each tile")
    render.add_argument(
        "--tile-norm",
        choices=("global", "tile"),
        default=None,
        help="GroupNorm statistics of tiled renders: whole image (exact) or per tile (the authors')",
    )
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


def sample_main(args: list[str]) -> list[Path]:
    """Run ``rezdiff sample``; returns the files written."""
    parser_ = parser()
    options = parser_.parse_args(args)
    if options.inpaint and not (options.mask or options.hole):
        parser_.error("--inpaint needs --mask IMAGE or --hole X0,Y0,X1,Y1")
    if (options.mask or options.hole or options.paste_known) and not options.inpaint:
        parser_.error("--mask, --hole and --paste-known go with --inpaint")
    if options.super_resolve and not options.resolution:
        parser_.error("--super-resolve needs --resolution (the size(s) to sample at)")

    from rezdiff.loading import load

    device = ("cuda" if torch.cuda.is_available() else "cpu") if options.device == "auto" else options.device
    model = load(options.ckpt, map_location=device)
    if options.spacing and "spacing" not in inspect.signature(model.sample).parameters:
        raise SystemExit(
            f"rezdiff sample: {type(model).__name__} has no --spacing option (it fixes its own time grid); "
            "drop --spacing"
        )
    out = Path(options.out)
    if options.super_resolve and hasattr(model, "reconstruct"):
        return _reconstruct(model, options, out)
    if options.inpaint or options.super_resolve:
        try:
            return _image_to_image(model, options, out)
        except ValueError as error:  # e.g. super-resolution with a model that has no encoder
            raise SystemExit(f"rezdiff sample: error: {error}") from error
    guidance: dict[str, Any] = {}
    if options.guide:
        from rezdiff.inverse.guidance import parse_condition

        channels = int(getattr(model, "channels", 3))
        try:
            conditions = [parse_condition(spec, channels) for spec in options.guide]
        except ValueError as error:
            parser_.error(str(error))
        guidance = {
            "guidance": conditions,
            "guidance_scale": options.guidance_scale,
            "guidance_normalize": not options.guide_raw,
        }
    rendering = _render_options(options)
    if rendering and "norm" not in inspect.signature(model.sample).parameters:
        parser_.error(f"--tile, --pad, --tile-norm are INFD options; {type(model).__name__} has no renderer")
    return _unconditional(model, options, out, {**guidance, **rendering})


def _render_options(options: argparse.Namespace) -> dict[str, Any]:
    """INFD's render keywords that were given on the command line (``--tile 0`` = untiled)."""
    rendering: dict[str, Any] = {}
    if options.tile is not None:
        rendering["tile"] = options.tile or None
    if options.pad is not None:
        rendering["pad"] = options.pad
    if options.tile_norm is not None:
        rendering["norm"] = options.tile_norm
    return rendering


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
    model: Any, options: argparse.Namespace, out: Path, guidance: dict[str, Any]
) -> list[Path]:
    from tqdm.auto import tqdm

    if guidance and "guidance" not in inspect.signature(model.sample).parameters:
        raise SystemExit(f"rezdiff sample: {type(model).__name__} does not support --guide (INFD does)")
    if hasattr(model, "reconstruct"):
        raise SystemExit(
            f"rezdiff sample: {type(model).__name__} is an autoencoder, it cannot sample from noise; render "
            "reconstructions with --super-resolve IMAGE ... --resolution R, or sample its second stage"
        )
    written: list[Path] = []
    resolutions = options.resolution or [None]
    with tqdm(total=options.num * len(resolutions), desc="sampling", unit="img") as progress:
        for resolution in resolutions:
            generator = torch.Generator(device=model.device).manual_seed(options.seed)
            batches = []
            for start in range(0, options.num, options.batch_size):
                count = min(options.batch_size, options.num - start)
                spacing = {"spacing": options.spacing} if options.spacing else {}
                batch = model.sample(
                    count,
                    resolution,
                    steps=options.steps,
                    generator=generator,
                    use_ema=not options.no_ema,
                    **spacing,
                    **guidance,
                )
                batches.append(batch.cpu())
                progress.update(count)
            images = torch.cat(batches)
            folder = out / f"{images.shape[-2]}x{images.shape[-1]}"
            names = [f"sample_{i:05d}" for i in range(len(images))]
            written += _save(images, names, folder, out / f"grid_{folder.name}.png")
    print(f"wrote {options.num} samples per resolution and {len(resolutions)} grid(s) to {out}")
    return written


def _reconstruct(model: Any, options: argparse.Namespace, out: Path) -> list[Path]:
    """``--super-resolve`` with a stage-1 autoencoder (``model.reconstruct``): encode each image and render
    its decoding at every ``--resolution``; deterministic, so ``--seed`` and ``--steps`` do not apply."""
    from rezdiff.data.images import load_image

    paths = [Path(p) for p in options.super_resolve]
    images = [load_image(path, channels=int(getattr(model, "channels", 3))) for path in paths]
    written: list[Path] = []
    with torch.no_grad():
        for resolution in options.resolution:
            results = [
                model.reconstruct(image[None].to(model.device), resolution, **_render_options(options)).cpu()
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
        raise SystemExit(
            "rezdiff sample: --inpaint and --super-resolve need an ∞-Diff checkpoint, "
            f"got {type(model).__name__}"
        )
    return candidate


def _hole_mask(box: tuple[float, float, float, float], resolution: tuple[int, int]) -> Tensor:
    """1 = known, 0 inside the box (pixel centres within ``[x0, x1] x [y0, y1]``)."""
    from rezdiff.data.coords import pixel_centers

    centers = pixel_centers(resolution)  # [H, W, 2] as (x, y)
    x, y = centers[..., 0], centers[..., 1]
    inside = (x >= box[0]) & (x <= box[2]) & (y >= box[1]) & (y <= box[3])
    return (~inside).float()


def _image_to_image(model: Any, options: argparse.Namespace, out: Path) -> list[Path]:
    from rezdiff.data.images import load_image, resize
    from rezdiff.inverse import inpaint, super_resolve

    pixel_model = _pixel_model(model)
    paths = [Path(p) for p in options.inpaint or options.super_resolve]
    images = [load_image(path, channels=pixel_model.channels) for path in paths]
    names = [path.stem for path in paths]
    written: list[Path] = []
    common = {"steps": options.steps, "use_ema": not options.no_ema, "spacing": options.spacing}
    if options.super_resolve:
        for resolution in options.resolution:
            generator = torch.Generator(device=pixel_model.device).manual_seed(options.seed)
            results = [
                super_resolve(pixel_model, image[None], resolution, generator=generator, **common).cpu()
                for image in images
            ]
            folder = out / "{}x{}".format(*as_hw(resolution))
            written += _save(torch.cat(results), names, folder, out / f"grid_{folder.name}.png")
        print(f"wrote {len(images)} super-resolved image(s) per resolution to {out}")
        return written
    if options.resolution is None and len({tuple(image.shape) for image in images}) > 1:
        raise SystemExit("rezdiff sample: --inpaint images of different sizes need --resolution")
    mask_image = load_image(options.mask, channels=1) if options.mask else None
    for resolution in options.resolution or [None]:
        generator = torch.Generator(device=pixel_model.device).manual_seed(options.seed)
        results, shown = [], []
        for image in images:
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
                generator=generator,
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
