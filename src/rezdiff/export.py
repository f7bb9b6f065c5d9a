"""Exports: a diffusers pipeline folder for the U-Net families, and a safetensors + JSON copy of any model.

``to_diffusers`` writes what ``DDIMPipeline.from_pretrained`` / ``DDPMPipeline.from_pretrained`` read: the
sampling (EMA) weights of the DDPM baseline's U-Net, or of INFD's latent U-Net, as a ``UNet2DModel`` whose
config carries ``sample_size``, and the scheduler that reproduces rezdiff's sampler step for step. INFD's
folder samples *latents*: decoding them needs INFD's renderer, which diffusers does not have.

``to_safetensors`` writes ``model.safetensors`` (every weight and buffer of the state dict) beside
``rezdiff.json`` (class and hyperparameters): plain data only, read by :func:`rezdiff.load`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Literal

import torch

from rezdiff.models.base import DiffusionModule

SAFETENSORS_FILE = "model.safetensors"
CONFIG_FILE = "rezdiff.json"
# rezdiff's beta schedule names -> diffusers'
_BETA_SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}


def _unet_family(model: DiffusionModule) -> tuple[str, int]:
    """("ddpm" | "infd", the U-Net's square input size) or a ValueError naming what can be exported."""
    from rezdiff.models.ddpm import DDPM
    from rezdiff.models.infd import INFD

    if isinstance(model, DDPM):
        return "ddpm", model.image_size
    if isinstance(model, INFD):
        return "infd", model.latent_shape[1]
    raise ValueError(
        f"{type(model).__name__} has no diffusers equivalent: to_diffusers exports DDPM and INFD (its latent "
        "U-Net); use to_safetensors for any model"
    )


def to_diffusers(
    model: DiffusionModule,
    folder: str | Path,
    *,
    scheduler: Literal["ddim", "ddpm"] | None = None,
    use_ema: bool = True,
) -> Path:
    """Write ``model`` as a diffusers pipeline folder (``save_pretrained`` layout); returns the folder.

    ``scheduler`` defaults to the model's sampler (INFD: ``"ddim"``). The DDIM scheduler carries the model's
    schedule, spacing and clipping; to sample as ``model.sample`` does, call the pipeline with the model's
    ``eta``, a ``num_inference_steps`` that divides ``num_train_steps`` (diffusers' DDIM jumps by
    ``T // steps``), and ``use_clipped_model_output=True`` when ``eps_after_clip="from_x0"``: these calling
    settings are recorded in ``rezdiff.json`` beside the pipeline.
    """
    from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler

    family, size = _unet_family(model)
    hp = model.hparams
    scheduler = scheduler or (getattr(model, "sampler", "ddim") if family == "ddpm" else "ddim")
    if scheduler not in ("ddim", "ddpm"):
        raise ValueError(f"scheduler must be 'ddim' or 'ddpm', got {scheduler!r}")
    clip = bool(getattr(model, "clip_denoised", False))
    common = dict(
        num_train_timesteps=int(hp["num_train_steps"]),
        beta_schedule=_BETA_SCHEDULES[hp["schedule"]],
        beta_start=float(hp["beta_start"]),
        beta_end=float(hp["beta_end"]),
        clip_sample=clip,
        clip_sample_range=1.0,
        prediction_type="epsilon",
    )
    unet = copy.deepcopy(model.sampling_network(use_ema).net).to("cpu", torch.float32).eval()
    unet.register_to_config(sample_size=size)
    if scheduler == "ddim":
        pipeline = DDIMPipeline(
            unet=unet,
            scheduler=DDIMScheduler(
                **common, set_alpha_to_one=True, steps_offset=0, timestep_spacing=model.spacing
            ),
        )
    else:
        # rezdiff's ancestral step uses the posterior variance (diffusers' "fixed_small")
        pipeline = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(**common, variance_type="fixed_small"))
    folder = Path(folder)
    pipeline.save_pretrained(folder)
    calling = {
        "family": family,
        "scheduler": scheduler,
        "num_inference_steps": int(model.sample_steps) if scheduler == "ddim" else int(hp["num_train_steps"]),
        "eta": float(model.eta),
        "use_clipped_model_output": getattr(model, "eps_after_clip", "network") == "from_x0",
        "output": "images in [0, 1]" if family == "ddpm" else "scaled latents (decode with INFD)",
    }
    if family == "infd":
        calling["latent_scale"] = float(model.latent_scale_value)
    (folder / CONFIG_FILE).write_text(json.dumps({"diffusers_call": calling}, indent=2) + "\n")
    return folder


def _plain(value: Any) -> Any:
    """Hyperparameters as JSON data (tuples become lists; anything else must already be plain)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f"hyperparameter value {value!r} of type {type(value).__name__} is not plain data")


def to_safetensors(model: DiffusionModule, folder: str | Path) -> Path:
    """Write ``model``'s state dict as ``model.safetensors`` and its class and hyperparameters as JSON."""
    from safetensors.torch import save_file

    from rezdiff import __version__

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cls = type(model)
    hparams = {k: v for k, v in model.hparams.items() if not k.startswith("_")}
    config = {
        "rezdiff": {"class_path": f"{cls.__module__}.{cls.__qualname__}", "version": __version__},
        "hyper_parameters": _plain(hparams),
    }
    # safetensors refuses tensors that share storage (EMA copies may alias buffers): store each on its own
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(folder / SAFETENSORS_FILE))
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return folder


def read_safetensors(folder: Path) -> dict[str, Any]:
    """A checkpoint-like dict (``rezdiff``, ``hyper_parameters``, ``state_dict``) from a ``to_safetensors``
    folder, so :func:`rezdiff.load` treats both file kinds alike."""
    from safetensors.torch import load_file

    config_path, weights = folder / CONFIG_FILE, folder / SAFETENSORS_FILE
    if not (config_path.is_file() and weights.is_file()):
        raise ValueError(
            f"{folder} is not a rezdiff export: it needs {CONFIG_FILE} and {SAFETENSORS_FILE} "
            "(written by rezdiff export --format safetensors)"
        )
    config = json.loads(config_path.read_text())
    if "rezdiff" not in config:
        raise ValueError(
            f"{config_path} names no rezdiff model class (a diffusers export? load it with diffusers)"
        )
    return {**config, "state_dict": load_file(str(weights))}


def parse(args: list[str]) -> tuple[Any, Any]:
    """(the parser, the options) of ``rezdiff export ARGS``: jsonargparse in the dialect of ``rezdiff fit``
    (``-c`` files, ``--print_config``); the old ``--ckpt`` works with one FutureWarning."""
    from rezdiff.commands import command_parser, respell

    parser = command_parser(
        "export",
        "Write a checkpoint as a diffusers pipeline folder (DDPM, INFD's latent U-Net) or as "
        "safetensors + JSON (any model; rezdiff.load reads it).",
    )
    parser.add_argument("--ckpt_path", type=str, required=True, help="a checkpoint written by rezdiff fit")
    parser.add_argument("--out", type=str, required=True, help="the folder to write")
    parser.add_argument("--format", type=Literal["diffusers", "safetensors"], default="safetensors")
    parser.add_argument(
        "--scheduler",
        type=Literal["ddim", "ddpm"] | None,
        default=None,
        help="diffusers only (default: the model's sampler)",
    )
    try:
        argv = respell("export", args, {"--ckpt": "--ckpt_path"})
    except ValueError as error:
        parser.error(str(error))
    return parser, parser.parse_args(argv)


def export_main(args: list[str]) -> Path:
    """``rezdiff export --ckpt_path CKPT --out DIR [--format diffusers|safetensors]``."""
    from rezdiff.loading import CheckpointError, load

    parser, options = parse(args)
    try:
        model = load(options.ckpt_path)
        if options.format == "diffusers":
            folder = to_diffusers(model, options.out, scheduler=options.scheduler)
        else:
            folder = to_safetensors(model, options.out)
    except (CheckpointError, FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    print(f"wrote {folder}")
    return folder
