"""Paper configs are the papers: every ``configs/<family>_<dataset>.yaml`` builds, and its schedule, steps, η,
learning rates, EMA, network sizes and parameter counts equal the values its paper states (where the paper is
silent: the authors' code). One row per value, each naming its source.

Rows read a dotted key of the YAML file (``model.init_args.optimizer.init_args.lr``) or a quantity derived
from it (``derived.*``, see ``DERIVED``): a parameter count of the network built on the meta device, channel
multipliers, the resolutions where attention runs. Where a config departs from its source on purpose, the row
asserts the config's value and its source names the family README's deviation.

Not asserted: the ∞-Diff image-model parameter counts. The authors' ``SparseUNet``/``SparseEncoder`` of
configs/ffhq_256_config.py count 321,512,564 / 122,028,337 (``torch_dense`` backend, meta device) against
rezdiff's 460,888,643 / 154,980,736 (429,906,243 for the denoiser with ``latent_conditioning: embedding``;
benchmarks/results/infty_diff_figures_cpu.json): their U-Net widens one level later
(128/128/256/512/1024); a declared difference of ``models/infty_diff/network.py`` (family README,
deviations: inner U-Net layout), not of a config.
"""

from __future__ import annotations

import copy
import importlib
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"

HO = "Ho et al. 2020, App. B"
HO_CODE = "hojonathanho/diffusion scripts/run_{}.py"
DVDP = "Zhang et al. 2023 (DVDP)"
INFTY = "Bond-Taylor & Willcocks 2024 (∞-Diff), App. A"
INFTY_CODE = "samb-t/infty-diff configs/ffhq_256_config.py"
INFTY_LATENT_CODE = "samb-t/infty-diff configs/ffhq_latent_config.py"
DIFFAE = (
    "Preechakul et al. 2022 (phizaz/diffae templates_latent.py ffhq256_autoenc_latent), "
    "cited by ∞-Diff App. A"
)
INFD = "Chen et al. 2024 (INFD), App. H"
INFD_CODE = "yinboc/infd cfgs/{}"
ML_CODE = "PaulLyonel/multilevelDiff {}"
ML_DEVIATION = (
    "rezdiff choice, models/multilevel/README.md deviations ('Batch size, epochs, learning rate ... ours')"
)


@dataclass(frozen=True)
class Row:
    """One expected value: ``key`` of ``config`` equals ``expected`` (relative tolerance ``rel``)."""

    config: str
    key: str
    expected: Any
    source: str
    rel: float = 0.0

    def __str__(self) -> str:
        return f"{self.config}:{self.key}"


def rows_for(configs: tuple[str, ...], values: list[tuple[str, Any, str]]) -> list[Row]:
    """The same (key, expected, source) rows for several configs (twins share their values)."""
    return [Row(config, key, expected, source) for config in configs for key, expected, source in values]


# --- DDPM (Ho et al. 2020) and its DVDP twins: identical U-Net and optimisation (DVDP §5.2, "DDPM* ... the
# same network structure ... with the same hyperparameters"); DVDP has no code, its U-Net is the DDPM one.
CIFAR = ("ddpm_cifar10", "dvdp_cifar10")
FFHQ256 = ("ddpm_ffhq256", "dvdp_ffhq256")
FFHQ1024 = ("ddpm_ffhq1024", "dvdp_ffhq1024")
DDPM_PROCESS = [
    ("derived.num_train_steps", 1000, f"{HO}: T = 1000"),
    ("model.init_args.schedule", "linear", f"{HO}: linear betas"),
    ("model.init_args.beta_start", 1e-4, f"{HO}: beta_1 = 1e-4"),
    ("model.init_args.beta_end", 0.02, f"{HO}: beta_T = 0.02"),
    ("model.init_args.optimizer.class_path", "torch.optim.AdamW", f"{HO}: Adam (AdamW with weight decay 0)"),
    (
        "model.init_args.lr_scheduler.class_path",
        "rezdiff.models.LinearWarmup",
        HO_CODE.format("cifar") + ": warmup",
    ),
    ("model.init_args.ema.decay", 0.9999, f"{HO}: EMA decay 0.9999"),
    ("model.init_args.ema.warmup", False, "hojonathanho/diffusion tpu_utils.make_ema: constant decay"),
    ("model.init_args.lr_scheduler.init_args.steps", 5000, HO_CODE.format("cifar") + ": warmup=5000"),
    (
        "model.init_args.optimizer.init_args.betas",
        [0.9, 0.999],
        HO_CODE.format("cifar") + ": optimizer='adam' (TF defaults)",
    ),
    (
        "model.init_args.optimizer.init_args.weight_decay",
        0.0,
        HO_CODE.format("cifar") + ": plain Adam, no weight decay",
    ),
    ("trainer.gradient_clip_val", 1.0, HO_CODE.format("cifar") + ": grad_clip=1."),
]
DDPM_NETWORK = [
    ("model.init_args.unet.layers_per_block", 2, f"{HO}: two residual blocks per resolution"),
    ("derived.attention_resolutions", [16], f"{HO}: self-attention at 16x16"),
    ("derived.base_channels", 128, HO_CODE.format("cifar") + ": ch=128"),
]
DDPM_SAMPLER = [
    ("model.init_args.sampler", "ddpm", f"{HO}: ancestral sampling (Algorithm 2)"),
    ("model.init_args.sample_steps", 1000, f"{HO}: T = 1000 reverse steps"),
]
DVDP_SAMPLER = [  # stated for FFHQ 1024 (§5.2, Table 2); elsewhere the DDPM* baseline's, i.e. Ho et al.'s
    ("model.init_args.sampler", "ddpm", f"{DVDP} §5.2: DDPM sampling, 1000 steps (Table 2); {HO}"),
    ("model.init_args.sample_steps", 1000, f"{DVDP} §5.2: 1000 DDPM steps (Table 2); {HO}: T steps"),
]
ROWS = [
    *rows_for(CIFAR + FFHQ256 + FFHQ1024, DDPM_PROCESS),
    *rows_for(CIFAR + FFHQ256, DDPM_NETWORK),
    *rows_for(("ddpm_cifar10", "ddpm_ffhq256"), DDPM_SAMPLER),
    *rows_for(("dvdp_cifar10", "dvdp_ffhq256", "dvdp_ffhq1024", "ddpm_ffhq1024"), DVDP_SAMPLER),
    *rows_for(
        CIFAR,
        [
            ("derived.channel_multipliers", [1, 2, 2, 2], HO_CODE.format("cifar") + ": ch_mult=(1, 2, 2, 2)"),
            ("model.init_args.unet.dropout", 0.1, f"{HO}: dropout 0.1 on CIFAR10"),
            ("model.init_args.optimizer.init_args.lr", 2e-4, f"{HO}: learning rate 2e-4"),
            ("data.init_args.batch_size", 128, f"{HO}: batch 128 for CIFAR10"),
            ("trainer.max_steps", 800_000, f"{HO}: CIFAR10 trained for 800k steps"),
        ],
    ),
    Row("ddpm_cifar10", "derived.network_params", 35.7e6, f"{HO}: 35.7 million parameters", rel=2e-3),
    *rows_for(
        FFHQ256,
        [
            ("derived.channel_multipliers", [1, 1, 2, 2, 4, 4], HO_CODE.format("celebahq") + ": ch_mult"),
            ("model.init_args.unet.dropout", 0.0, HO_CODE.format("celebahq") + " / run_lsun.py: dropout=0.0"),
            (
                "model.init_args.optimizer.init_args.lr",
                2e-5,
                f"{HO}: lr lowered to 2e-5 for the 256x256 images",
            ),
            ("derived.global_batch_8_gpus", 64, f"{HO}: batch 64 for larger images (config: 8 per GPU x 8)"),
            ("trainer.max_steps", 500_000, f"{HO}: CelebA-HQ 256 (the paper's face data) trained 0.5M steps"),
        ],
    ),
    Row(
        "ddpm_ffhq256",
        "derived.network_params",
        114e6,
        f"{HO}: 114 million parameters (256² models)",
        rel=5e-3,
    ),
    Row("dvdp_cifar10", "model.init_args.turning_points", [600], f"{DVDP} §5.1: T = {{600}} for CIFAR10 32²"),
    Row("dvdp_ffhq256", "model.init_args.turning_points", [300, 600], f"{DVDP} §5.1: {{300, 600}} at 256²"),
    Row(
        "dvdp_ffhq1024",
        "model.init_args.turning_points",
        [200, 400, 600, 800],
        f"{DVDP} §5.1: {{200, 400, 600, 800}} for FFHQ 1024²",
    ),
    *rows_for(
        ("dvdp_cifar10", "dvdp_ffhq256", "dvdp_ffhq1024"),
        [("model.init_args.process", "dvdp", f"{DVDP}: the dimensionality-varying process")],
    ),
]

DVDP_1024_DEVIATION = (
    "rezdiff deviation, models/dvdp/README.md 'FFHQ 1024': one U-Net for both twins "
    f"({DVDP} Table 2: a shallower 105M-parameter U-Net for DVDP)"
)
ROWS += [
    Row("dvdp_cifar10", "derived.network_params", 35.7e6, f"{HO}: 35.7M; {DVDP} §5.2: DDPM*'s", rel=2e-3),
    Row("dvdp_ffhq256", "derived.network_params", 114e6, f"{HO}: 114M; {DVDP} §5.2: DDPM*'s", rel=5e-3),
    *[Row(c, "derived.network_params", 73_892_739, DVDP_1024_DEVIATION) for c in FFHQ1024],
]

# --- ∞-Diff (the 256² recipe; the CelebA-HQ 64 network is rezdiff's choice, declared in its README).
INFTY_64_DEVIATION = "rezdiff choice, models/infty_diff/README.md deviations ('The CelebA-HQ 64 network')"
INFTY_IMAGE = ("infty_diff_ffhq256", "infty_diff_celebahq64")
ROWS += rows_for(
    INFTY_IMAGE,
    [
        ("derived.num_train_steps", 1000, f"{INFTY}: cosine schedule with 1000 steps"),
        ("model.init_args.mollifier_std", 1.0, f"{INFTY}: Gaussian blur with a variance of 1.0"),
        ("model.init_args.sampler", "ddim", f"{INFTY} §4.4: deterministic DDIM"),
        ("model.init_args.sample_steps", 100, f"{INFTY} §4.4: DDIM with 100 steps"),
        ("model.init_args.eta", 0.0, f"{INFTY} §4.4: deterministic DDIM"),
        (
            "model.init_args.optimizer.class_path",
            "torch.optim.AdamW",
            f"{INFTY}: Adam (AdamW with weight decay 0)",
        ),
        ("model.init_args.optimizer.init_args.lr", 5e-5, f"{INFTY}: learning rate 5e-5"),
        (
            "model.init_args.optimizer.init_args.betas",
            [0.9, 0.99],
            f"{INFTY_CODE}: adam_beta1 0.9, adam_beta2 0.99",
        ),
        ("model.init_args.optimizer.init_args.weight_decay", 0.0, f"{INFTY}: Adam (no weight decay)"),
        ("data.init_args.batch_size", 32, f"{INFTY}: batch size 32"),
        ("model.init_args.ema.decay", 0.995, f"{INFTY_CODE}: ema_decay 0.995"),
        ("model.init_args.ema.update_every", 10, f"{INFTY_CODE}: ema_update_every 10"),
        ("model.init_args.latent_dim", 1024, f"{INFTY}: latent size 1024"),
        ("model.init_args.sparse_blocks", 3, f"{INFTY}: 3 sparse residual blocks"),
        ("model.init_args.kernel_size", 7, f"{INFTY}: kernel size 7"),
        ("model.init_args.sparse_width", 64, f"{INFTY}: 64 channels"),
        ("model.init_args.depthwise", True, f"{INFTY}: depthwise sparse convolution"),
        ("model.init_args.knn", 3, f"{INFTY_CODE}: knn_neighbours 3"),
        ("model.init_args.inner_channels", 128, f"{INFTY}: 128 channels at the highest U-Net resolution"),
        ("model.init_args.inner_layers_per_block", 2, f"{INFTY_CODE}: uno_blocks_per_level 2"),
        ("model.init_args.inner_attention_resolutions", [16, 8], f"{INFTY}: attention at 16 and 8"),
        ("model.init_args.dropout", 0.1, f"{INFTY_CODE}: uno_dropout 0.1"),
        ("derived.point_fraction", 0.25, f"{INFTY_CODE}: mc_integral.q_sample = img_size² // 4"),
        ("derived.mixed_precision", True, f"{INFTY}: automatic mixed precision"),
        ("trainer.gradient_clip_val", 1.0, "samb-t/infty-diff train_inf_ae_diffusion.py: clip 1.0"),
    ],
)
ROWS += [
    Row("infty_diff_ffhq256", "model.init_args.train_resolution", 256, f"{INFTY}: 256 x 256 models"),
    Row("infty_diff_ffhq256", "model.init_args.inner_resolution", 128, f"{INFTY}: U-Net fixed at 128 x 128"),
    Row(
        "infty_diff_ffhq256",
        "model.init_args.inner_multipliers",
        [1, 2, 4, 8, 8],
        f"{INFTY}: channels doubled up to a factor of 8; {INFTY_CODE}: uno_mults",
    ),
    *rows_for(
        ("infty_diff_celebahq64",),
        [
            ("model.init_args.train_resolution", 64, f"{INFTY} Table 1: CelebA-HQ 64 x 64"),
            ("model.init_args.inner_resolution", 32, INFTY_64_DEVIATION),
            ("model.init_args.inner_multipliers", [1, 2, 4, 4], INFTY_64_DEVIATION),
        ],
    ),
]
INFTY_LATENT = ("infty_diff_ffhq256_latent", "infty_diff_celebahq64_latent")
LATENT_COUNTED = (
    f"{DIFFAE}: MLPSkipNet(1024, 2048, 10 layers, time_emb_channels=64), counted on the meta device from "
    "samb-t/infty-diff models/latent_model.py"
)
ROWS += rows_for(
    INFTY_LATENT,
    [
        ("model.init_args.hidden_dim", 2048, f"{DIFFAE}: MLP skip-net of 2048 channels"),
        ("model.init_args.num_layers", 10, f"{DIFFAE}: 10 layers"),
        ("derived.time_embed_dim", 64, f"{DIFFAE}: net_latent_time_emb_channels 64"),
        ("model.init_args.num_train_steps", 1000, f"{DIFFAE}: T = 1000"),
        ("model.init_args.schedule", "constant", f"{DIFFAE}: latent_beta_scheduler const0.008"),
        ("model.init_args.beta", 0.008, f"{DIFFAE}: const0.008"),
        ("data.init_args.batch_size", 256, f"{INFTY_LATENT_CODE}: batch_size 256"),
        ("model.init_args.optimizer.init_args.lr", 1e-4, f"{INFTY_LATENT_CODE}: learning_rate 1e-4"),
        (
            "model.init_args.optimizer.init_args.betas",
            [0.9, 0.99],
            f"{INFTY_LATENT_CODE}: adam betas (0.9, 0.99)",
        ),
        ("model.init_args.optimizer.init_args.weight_decay", 0.04, f"{INFTY_LATENT_CODE}: weight_decay 0.04"),
        ("model.init_args.ema.decay", 0.995, f"{INFTY_LATENT_CODE}: ema_decay 0.995"),
        ("model.init_args.ema.update_every", 10, f"{INFTY_LATENT_CODE}: ema_update_every 10"),
        ("derived.stage1_latent_dim", 1024, f"{INFTY}: latent size 1024"),
        ("trainer.gradient_clip_val", 1.0, "samb-t/infty-diff train_latent_diffusion.py: clip 1.0"),
        ("derived.network_params", 75_639_808, LATENT_COUNTED),
    ],
)

# --- INFD (stage 1 and the 6K-Mix variant share the model; stage 2 is the latent diffusion).
INFD_STAGE1 = ("infd_ffhq", "infd_ffhq6k_mix")
ROWS += rows_for(
    INFD_STAGE1,
    [
        ("model.init_args.encoder_resolution", 256, INFD_CODE.format("ae_ffhq.yaml") + ": resize_inp 256"),
        ("model.init_args.latent_channels", 3, f"{INFD} H.1: 3 latent channels"),
        ("model.init_args.base_channels", 128, f"{INFD} H.1: base channel 128"),
        ("model.init_args.channel_mult", [1, 2, 4], f"{INFD} H.1: multipliers 1, 2, 4"),
        ("model.init_args.num_res_blocks", 2, f"{INFD} H.1: 2 ResNet blocks per level"),
        ("model.init_args.num_codes", 8192, INFD_CODE.format("models/ae-d4vq.yaml") + ": n_embed 8192"),
        ("model.init_args.vq_beta", 0.25, "yinboc/infd models/infd_base.py: vq_beta=0.25"),
        ("model.init_args.renderer", "clif", f"{INFD} §3: the CLIF renderer"),
        ("model.init_args.renderer_channels", 256, INFD_CODE.format("models/ae-d4vq.yaml") + ": hidden 256"),
        ("model.init_args.renderer_blocks", 2, f"{INFD} H.1: two ResNet blocks in CLIF"),
        ("model.init_args.gan_weight", 0.75, INFD_CODE.format("models/ae-d4vq.yaml") + ": gan_g_loss 0.75"),
        *(
            (f"model.init_args.{player}_optimizer.{key}", expected, f"{INFD} H.2: {what} (both players)")
            for player in ("generator", "discriminator")
            for key, expected, what in (
                ("class_path", "torch.optim.Adam", "Adam"),
                ("init_args.lr", 3.6e-5, "learning rate 3.6e-5"),
                ("init_args.betas", [0.5, 0.9], "Adam betas (0.5, 0.9)"),
                ("init_args.weight_decay", 0.0, "Adam, no weight decay"),
            )
        ),
        ("data.init_args.batch_size", 8, f"{INFD} H.2: batch size 8"),
        ("derived.iterations", 1_000_000, f"{INFD} H.2: 1M iterations (global_step counts two optimisers)"),
        ("derived.mixed_precision", False, "yinboc/infd trainers: float32, no autocast"),
        (
            "data.init_args.view.init_args.min_scale",
            256,
            INFD_CODE.format("ae_ffhq.yaml") + ": resize_gt_lb",
        ),
        (
            "data.init_args.view.init_args.max_scale",
            1024,
            INFD_CODE.format("ae_ffhq.yaml") + ": resize_gt_ub",
        ),
        (
            "data.init_args.view.init_args.patch",
            256,
            INFD_CODE.format("ae_ffhq.yaml") + ": final_crop_gt 256",
        ),
        (
            "data.init_args.view.init_args.p_max",
            0.0,
            INFD_CODE.format("ae_ffhq.yaml") + ": hrft never starts",
        ),
    ],
)
# Parameter counts of the authors' modules, built on the meta device from yinboc/infd: models/vqgan/utils.py
# (encoder_vqf4: LDM Encoder + 1x1 conv), quantizer.py (8192 x 3 codebook), model.py SimpleRendererNet
# (132 -> 256 channels), discriminator.py NLayerDiscriminator(3, 64, 3) and diffusion/utils.py
# make_openai_unet. The decoder is left out: see the module docstring.
INFD_COUNTED = "yinboc/infd {}, counted on the meta device"
ROWS += rows_for(
    INFD_STAGE1,
    [
        ("derived.encoder_params", 22_337_423, INFD_COUNTED.format("models/vqgan/utils.py encoder_vqf4")),
        ("derived.quantizer_params", 24_576, INFD_COUNTED.format("VectorQuantizer(8192, 3)")),
        ("derived.renderer_params", 2_674_179, INFD_COUNTED.format("SimpleRendererNet(132, 256)")),
        ("derived.discriminator_params", 2_765_633, INFD_COUNTED.format("NLayerDiscriminator(3, 64, 3)")),
    ],
)
ROWS += [
    Row(
        "infd_ffhq_latent",
        "derived.network_params",
        274_056_163,
        INFD_COUNTED.format("diffusion/utils.py make_openai_unet (ADM UNetModel)"),
    ),
    Row(
        "infd_ffhq6k_mix",
        "data.init_args.view.init_args.high_res_prob",
        0.5,
        f"{INFD} §5.3: '6K-Mix, bal.'",
    ),
    *rows_for(
        ("infd_ffhq_latent",),
        [
            ("derived.base_channels", 224, f"{INFD} H.1: base channels 224"),
            ("derived.channel_multipliers", [1, 2, 3, 4], f"{INFD} H.1: multipliers 1, 2, 3, 4"),
            ("model.init_args.unet.layers_per_block", 2, f"{INFD} H.1: 2 ResNet blocks at every level"),
            ("derived.attention_resolutions", [32, 16, 8], f"{INFD} H.1: attention at downsampling 2, 4, 8"),
            ("model.init_args.unet.attention_head_dim", 32, f"{INFD} H.1: 32 channels per head"),
            ("model.init_args.num_train_steps", 1000, "yinboc/infd diffusion/script_util.py: steps=1000"),
            ("model.init_args.schedule", "linear", INFD_CODE.format("models/dm.yaml") + ": linear betas"),
            ("model.init_args.beta_start", 0.0015, INFD_CODE.format("models/dm.yaml") + ": 0.0015"),
            ("model.init_args.beta_end", 0.0195, INFD_CODE.format("models/dm.yaml") + ": 0.0195"),
            ("model.init_args.sample_steps", 200, "yinboc/infd diffusion/utils.py: respacing 'ddim200'"),
            ("model.init_args.eta", 1.0, "yinboc/infd models/infd_base.py: z_ddim_eta=1.0"),
            ("model.init_args.optimizer.class_path", "torch.optim.AdamW", f"{INFD} H.2: AdamW"),
            ("model.init_args.optimizer.init_args.lr", 9.6e-5, f"{INFD} H.2: learning rate 9.6e-5"),
            (
                "model.init_args.optimizer.init_args.betas",
                [0.9, 0.999],
                f"{INFD} H.2: AdamW betas (0.9, 0.999)",
            ),
            ("model.init_args.optimizer.init_args.weight_decay", 0.01, f"{INFD} H.2: weight decay 0.01"),
            ("model.init_args.ema.decay", 0.9999, "yinboc/infd models/infd_base.py: z_dm_ema_rate=0.9999"),
            (
                "model.init_args.ema.warmup",
                False,
                "yinboc/infd models/infd_base.py: update_dm_ema, constant rate",
            ),
            ("data.init_args.batch_size", 48, f"{INFD} H.2: batch size 48"),
            ("trainer.max_steps", 600_000, f"{INFD} H.2: 600K iterations on FFHQ"),
            ("derived.mixed_precision", False, "yinboc/infd trainers: float32, no autocast"),
        ],
    ),
]

# --- Multilevel (the paper gives no numbers; the authors' MNIST code main.py, fno.py, sde.py does).
MULTILEVEL = ("multilevel_mnist_like", "multilevel_warmstart")
ROWS += rows_for(
    MULTILEVEL,
    [
        ("model.init_args.network", "fno", ML_CODE.format("main.py: FNO2d score network")),
        ("model.init_args.modes", 14, ML_CODE.format("main.py: --modes 14")),
        ("model.init_args.width", 32, ML_CODE.format("main.py: --width 32")),
        ("derived.n_layers", 4, ML_CODE.format("fno.py: four Fourier layers conv0..conv3")),
        ("derived.projection", 128, ML_CODE.format("fno.py: fc1 = Linear(width, 128)")),
        ("model.init_args.beta_min", 0.1, ML_CODE.format("sde.py: alpha_min=0.1")),
        ("model.init_args.beta_max", 20.0, ML_CODE.format("sde.py: alpha_max=20.0")),
        ("model.init_args.sampler", "sde", ML_CODE.format("utils.get_samples: Euler-Maruyama")),
        ("model.init_args.sample_steps", 1000, ML_CODE.format("main.py: get_samples(..., 1000, ...)")),
        ("model.init_args.optimizer.init_args.lr", 1e-3, ML_DEVIATION + "; authors' main.py: 6e-4"),
        ("data.init_args.batch_size", 64, ML_DEVIATION + "; authors' main.py: 128"),
        ("model.init_args.ema.decay", 0.999, ML_DEVIATION + "; authors' code: no EMA"),
    ],
)
ML_WARM = ML_CODE.format("main_warmstart.py: ")
ROWS += [
    Row("multilevel_warmstart", "model.init_args.image_size", 64, ML_WARM + "MNIST Resize(64)"),
    Row(
        "multilevel_warmstart",
        "trainer.callbacks.0.init_args.milestones",
        [[0, 32], [50, 64]],
        ML_WARM + "epochs < n_epochs // 2 = 50 on 32² Fourier-downsampled data, then 64²",
    ),
]

# --- Sampling and stage settings that the fidelity work (issue 14) aligned with the authors' code.
ROWS += rows_for(
    INFTY_IMAGE,
    [
        ("model.init_args.spacing", "linspace", INFTY_CODE + ": space_timesteps(1000, '100') = 999 ... 0"),
        (
            "model.init_args.eps_after_clip",
            "from_x0",
            "samb-t/infty-diff ddim_sample: _predict_eps_from_xstart",
        ),
        ("model.init_args.latent_conditioning", "scale", "samb-t/infty-diff ConvBlock: h * (1 + mlp(z))"),
    ],
)
ROWS += rows_for(
    INFD_STAGE1,
    [
        ("model.init_args.disc_start", 0, INFD_CODE.format("ae_ffhq.yaml") + ": gan_start_after_iters 0"),
        ("derived.decoder_params", 32_957_068, INFD_COUNTED.format("decoder_vqf4, give_pre_end=True")),
    ],
)
ROWS.append(
    Row(
        "infd_ffhq_latent",
        "model.init_args.spacing",
        "trailing",
        "rezdiff deviation, models/infd/README.md ('sampling': the authors' ddim200 is leading, 995 ... 0)",
    )
)

# --- Random horizontal flips of the training images (issue 17 item 17).
ROWS += rows_for(
    CIFAR + FFHQ256 + FFHQ1024, [("derived.hflip", 0.5, HO_CODE.format("cifar, celebahq") + ": randflip=1")]
)
ROWS += rows_for(INFTY_IMAGE, [("derived.hflip", 0.5, "samb-t/infty-diff utils.get_data_loader: flip_p=0.5")])
ROWS += rows_for(
    ("infty_diff_ffhq256_latent", "infty_diff_celebahq64_latent"),
    [("derived.hflip", 0.0, "the latent stage mirrors its own batches (model flip: true); images unflipped")],
)
ROWS += rows_for(
    INFD_STAGE1 + ("infd_ffhq_latent",),
    [("derived.hflip", 0.0, "yinboc/infd datasets/wrapper_cae.py, ffhq.py: no flip")],
)
ROWS += rows_for(MULTILEVEL, [("derived.hflip", 0.0, ML_CODE.format("main.py: MNIST ToTensor, no flip"))])


# --------------------------------------------------------------------------------------------------- reading
@cache
def load(config: str) -> dict[str, Any]:
    return yaml.safe_load((CONFIGS / f"{config}.yaml").read_text())


def lookup(tree: dict[str, Any], key: str) -> Any:
    """``tree[a][b]...`` for the key ``a.b...``; a numeric part indexes a list (``trainer.callbacks.0``)."""
    node: Any = tree
    for part in key.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise KeyError(f"{key} (missing at {part!r})")
    return node


def model_class(cfg: dict[str, Any]) -> type[nn.Module]:
    module, name = cfg["model"]["class_path"].rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def stage1_spec(path: str) -> dict[str, Any]:
    """``{class_path, init_args}`` of the config that trains the checkpoint at ``path`` (runs/<name>/...)."""
    name = Path(path).parts[1]
    cfg = load(name)["model"]
    return {"class_path": cfg["class_path"], "init_args": dict(cfg["init_args"])}


@cache
def build(config: str) -> nn.Module:
    """The config's model with meta parameters: no memory, no stage-1 file (its config stands in)."""
    cfg = load(config)
    cls, args = model_class(cfg), dict(cfg["model"]["init_args"])
    if "autoencoder_ckpt" in args:  # INFD stage 2
        args["autoencoder_config"] = stage1_spec(args["autoencoder_ckpt"])
    if "stage1_ckpt" in args:  # ∞-Diff latent stage
        args["stage1"] = stage1_spec(args["stage1_ckpt"])
    if cls.__name__ == "DVDP":  # its schedule checks need real numbers: only the U-Net goes on meta
        import rezdiff.models.dvdp.module as dvdp_module

        unet = dvdp_module.UNet

        def meta_unet(*a: Any, **k: Any) -> nn.Module:
            with torch.device("meta"):
                return unet(*a, **k)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(dvdp_module, "UNet", meta_unet)
            return cls(**args)
    with torch.device("meta"):
        return cls(**args)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def init_args(config: str) -> dict[str, Any]:
    return load(config)["model"]["init_args"]


def num_train_steps(model: nn.Module) -> int:
    """T as the model holds it: the length of its ᾱ table (DVDP: of its schedule's σ̄ rows)."""
    table = getattr(model, "alphas_cumprod", None)
    if table is None:
        return model.schedule.sigma.shape[-1]  # type: ignore[union-attr]
    return len(table)


def network_input_size(config: str) -> int:
    """The side of the U-Net's input: the image, or for INFD stage 2 the stage-1 latent (f = 2^(levels-1))."""
    args = init_args(config)
    if "image_size" in args:
        return args["image_size"]
    stage1 = stage1_spec(args["autoencoder_ckpt"])["init_args"]
    return stage1["encoder_resolution"] // 2 ** (len(stage1["channel_mult"]) - 1)


def multipliers(channels: list[int]) -> list[float]:
    return [c / channels[0] for c in channels]


DERIVED: dict[str, Callable[[str], Any]] = {
    "network_params": lambda c: count(build(c).network),
    "encoder_params": lambda c: count(build(c).encoder),
    "quantizer_params": lambda c: count(build(c).quantizer),
    "renderer_params": lambda c: count(build(c).renderer),
    "discriminator_params": lambda c: count(build(c).discriminator),
    "decoder_params": lambda c: count(build(c).decoder),
    "num_train_steps": lambda c: num_train_steps(build(c)),
    "base_channels": lambda c: init_args(c)["unet"]["block_out_channels"][0],
    "channel_multipliers": lambda c: multipliers(init_args(c)["unet"]["block_out_channels"]),
    "attention_resolutions": lambda c: [
        network_input_size(c) // 2**level for level in init_args(c)["unet"]["attention_levels"]
    ],
    "global_batch_8_gpus": lambda c: 8 * lookup(load(c), "data.init_args.batch_size"),
    "mixed_precision": lambda c: str(load(c)["trainer"].get("precision", "32")).endswith("-mixed"),
    "point_fraction": lambda c: lookup(load(c), "data.init_args.view.init_args.fraction"),
    "hflip": lambda c: load(c)["data"]["init_args"].get("hflip", 0.0),  # FieldDataModule's default: 0
    "time_embed_dim": lambda c: build(c).network.time_embed_dim,
    "stage1_latent_dim": lambda c: build(c).latent_dim,
    "iterations": lambda c: lookup(load(c), "trainer.max_steps") // 2,
    "n_layers": lambda c: init_args(c).get("n_layers", build(c).hparams["n_layers"]),
    "projection": lambda c: init_args(c).get("projection", build(c).hparams["projection"]),
}


def value(row: Row) -> Any:
    """The row's quantity; a model argument the YAML leaves out is the class default it was built with."""
    if row.key.startswith("derived."):
        return DERIVED[row.key.removeprefix("derived.")](row.config)
    try:
        return lookup(load(row.config), row.key)
    except KeyError:
        name = row.key.removeprefix("model.init_args.")
        if name == row.key:
            raise
        return lookup(dict(build(row.config).hparams), name)  # recorded: the family's default filled in


def same(actual: Any, expected: Any, rel: float) -> bool:
    if isinstance(expected, (list, tuple)):
        return (
            isinstance(actual, (list, tuple))
            and len(actual) == len(expected)
            and all(same(a, e, rel) for a, e in zip(actual, expected, strict=True))
        )
    if isinstance(expected, bool) or isinstance(actual, bool) or isinstance(expected, str):
        return actual == expected
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return math.isclose(actual, expected, rel_tol=max(rel, 1e-12), abs_tol=0.0 if expected else 1e-15)
    return actual == expected


# ----------------------------------------------------------------------------------------------------- tests
PAPER_CONFIGS = sorted(path.stem for path in CONFIGS.glob("*_*.yaml"))


@pytest.mark.parametrize("config", PAPER_CONFIGS)
def test_paper_config_builds_and_has_rows(config: str) -> None:
    model = build(config)
    assert count(model) > 0
    assert any(row.config == config for row in ROWS), f"no paper values are checked for {config}"


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_paper_value(row: Row) -> None:
    actual = value(row)
    assert same(actual, row.expected, row.rel), (
        f"configs/{row.config}.yaml {row.key} = {actual!r}, expected {row.expected!r} ({row.source})"
    )


@pytest.mark.parametrize("config", PAPER_CONFIGS)
def test_paper_config_optimiser_is_the_one_its_yaml_names(config: str) -> None:
    """The rows read the YAML; the model built from it must train with exactly that optimiser and warm-up
    (one source of truth: nothing else sets them)."""
    model = build(config)
    args = init_args(config)
    for index, name in enumerate(model.optimizer_arguments):
        spec = args[name]
        with torch.device("meta"):
            optimizer = model.optimizer_factories[name]([nn.Parameter(torch.zeros(1))])
        assert f"torch.optim.{type(optimizer).__name__}" == spec["class_path"], name
        for key, expected in spec["init_args"].items():
            assert same(optimizer.defaults[key], expected, 0.0), (
                name,
                key,
                optimizer.defaults[key],
                expected,
            )
        if index == 0 and "lr_scheduler" in args:
            scheduler = model.lr_scheduler_factory(optimizer)
            assert type(scheduler).__name__ == "LinearWarmup"
            assert scheduler.steps == args["lr_scheduler"]["init_args"]["steps"]
    if "ema" in args:
        assert model.ema_settings.as_dict() == {**model.ema_settings.as_dict(), **args["ema"]}


# A config copy with one value changed (the kinds of slip the table exists for) must fail at least one row.
MUTATIONS = [
    ("ddpm_cifar10", "model.init_args.optimizer.init_args.lr", 1e-4),
    ("ddpm_ffhq256", "model.init_args.unet.block_out_channels", [128, 128, 256, 256, 512, 1024]),
    ("ddpm_cifar10", "model.init_args.num_train_steps", 4000),
    ("infd_ffhq_latent", "model.init_args.ema.decay", 0.999),
    ("infty_diff_ffhq256", "model.init_args.ema.decay", 0.9999),
    ("multilevel_mnist_like", "model.init_args.sample_steps", 500),
    ("infd_ffhq", "model.init_args.disc_layers", 4),  # only the discriminator's parameter count sees it
]


@pytest.mark.parametrize(("config", "key", "changed"), MUTATIONS, ids=lambda v: str(v))
def test_a_changed_config_value_fails_a_row(
    config: str, key: str, changed: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = copy.deepcopy(load(config))
    *parents, name = key.split(".")
    lookup(tree, ".".join(parents))[name] = changed
    original = load
    here = sys.modules[__name__]
    monkeypatch.setattr(here, "load", lambda c: tree if c == config else original(c))
    monkeypatch.setattr(here, "build", build.__wrapped__)  # uncached: built from the changed copy
    failing = [
        str(row) for row in ROWS if row.config == config and not same(value(row), row.expected, row.rel)
    ]
    assert failing, f"no row notices {key} = {changed!r} in {config}"
