"""Exports: diffusers pipelines that sample as rezdiff does; safetensors folders that rezdiff.load reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel

import rezdiff
from rezdiff import CheckpointError
from rezdiff.cli import main
from rezdiff.export import to_diffusers
from rezdiff.models import DDPM, DVDP, INFD
from tests.models.test_infd_latent import TINY, _tiny_autoencoder_config

pytestmark = pytest.mark.usefixtures("single_thread")
UNET = {"unet": TINY["unet"]}  # the U-Net of tests/configs/tiny_infd_latent.yaml


def _ddpm(**options) -> DDPM:
    torch.manual_seed(0)
    options = {"sample_steps": 8, **options}
    model = DDPM(image_size=8, channels=3, num_train_steps=40, **UNET, **options)
    # an EMA that differs from the raw weights, so exporting the wrong copy is visible
    for p in model.ema.module.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _pipeline_images(pipeline, **call) -> torch.Tensor:
    images = pipeline(output_type="np", **call).images  # [N, H, W, C] in [0, 1]
    return torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2) * 2 - 1


@pytest.mark.parametrize(
    ("schedule", "eta", "eps_after_clip", "spacing"),
    [("linear", 0.0, "from_x0", "trailing"), ("cosine", 1.0, "network", "leading")],
)
def test_ddim_pipeline_samples_as_the_model_does(
    tmp_path: Path, schedule: str, eta: float, eps_after_clip: str, spacing: str
) -> None:
    """Catches: raw instead of EMA weights, a wrong beta schedule name, spacing, clipping or final alpha,
    a missing sample_size."""
    model = _ddpm(schedule=schedule, eta=eta, eps_after_clip=eps_after_clip, spacing=spacing)
    folder = to_diffusers(model, tmp_path / "pipe")
    pipeline = DDIMPipeline.from_pretrained(folder)
    assert isinstance(pipeline.scheduler, DDIMScheduler)
    assert pipeline.unet.config.sample_size == 8
    call = json.loads((folder / "rezdiff.json").read_text())["diffusers_call"]
    theirs = _pipeline_images(
        pipeline,
        batch_size=3,
        generator=torch.Generator().manual_seed(5),
        num_inference_steps=call["num_inference_steps"],
        eta=call["eta"],
        use_clipped_model_output=call["use_clipped_model_output"],
    )
    ours = model.sample(3, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=0)


def test_ddpm_pipeline_samples_as_the_model_does(tmp_path: Path) -> None:
    model = _ddpm(sampler="ddpm")
    pipeline = DDPMPipeline.from_pretrained(to_diffusers(model, tmp_path / "pipe"))
    assert isinstance(pipeline.scheduler, DDPMScheduler)
    theirs = _pipeline_images(
        pipeline, batch_size=2, generator=torch.Generator().manual_seed(1), num_inference_steps=40
    )
    ours = model.sample(2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=0)


def test_infd_latent_unet_and_scheduler_give_the_model_latents(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = INFD("unused.ckpt", autoencoder_config=_tiny_autoencoder_config(), **{**TINY, "eta": 1.0}).eval()
    folder = to_diffusers(model, tmp_path / "pipe")
    unet = UNet2DModel.from_pretrained(folder, subfolder="unet")
    scheduler = DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
    assert not scheduler.config.clip_sample  # latents are not images
    generator = torch.Generator().manual_seed(3)
    z = torch.randn(2, *model.latent_shape, generator=generator)
    scheduler.set_timesteps(model.sample_steps)
    for t in scheduler.timesteps:
        z = scheduler.step(unet(z, t).sample, t, z, eta=1.0, generator=generator).prev_sample
    ours = model.sample_latents(2, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(ours, z, atol=2e-5, rtol=0)


def test_to_diffusers_refuses_other_families(tmp_path: Path) -> None:
    model = DVDP(image_size=8, **UNET)
    with pytest.raises(ValueError, match="DVDP has no diffusers equivalent"):
        to_diffusers(model, tmp_path)


def test_export_command_writes_a_pipeline(tmp_path: Path) -> None:
    model = _ddpm()
    ckpt = tmp_path / "model.ckpt"
    torch.save(
        {
            "rezdiff": {"class_path": "rezdiff.models.ddpm.module.DDPM"},
            "hyper_parameters": dict(model.hparams),
            "state_dict": model.state_dict(),
        },
        ckpt,
    )
    folder = main(
        ["export", "--ckpt_path", str(ckpt), "--out", str(tmp_path / "pipe"), "--format", "diffusers"]
    )
    assert (folder / "model_index.json").is_file()
    with pytest.raises(SystemExit) as error:
        main(["export", "--ckpt_path", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "x")])
    assert error.value.code == 2
    # the spelling of earlier releases, one release more: the same export with one FutureWarning
    with pytest.warns(FutureWarning, match="--ckpt is now --ckpt_path") as caught:
        again = main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "old"), "--format", "diffusers"])
    assert (again / "model_index.json").is_file()
    assert len([w for w in caught if issubclass(w.category, FutureWarning)]) == 1


def test_load_names_what_a_folder_lacks(tmp_path: Path) -> None:
    """An empty folder or a diffusers export given to rezdiff.load: a CheckpointError naming what lacks."""
    with pytest.raises(CheckpointError, match="needs rezdiff.json and model.safetensors"):
        rezdiff.load(tmp_path)
    folder = to_diffusers(_ddpm(), tmp_path / "pipe")
    with pytest.raises(CheckpointError, match="is not a rezdiff export"):
        rezdiff.load(folder)
