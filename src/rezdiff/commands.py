"""The ``rezdiff`` console script and ``python -m rezdiff``: ``rezdiff`` and ``rezdiff --help`` answer from
here without importing Lightning, diffusers or any family; every command goes on to :mod:`rezdiff.cli`."""

from __future__ import annotations

import sys

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


def print_overview(argv: list[str]) -> bool:
    """Print :data:`HELP` and return True when ``argv`` is ``-h``/``--help``; with no command at all,
    print it and exit with status 2; otherwise False (a command to run)."""
    if argv and argv[0] not in ("-h", "--help"):
        return False
    print(HELP)
    if not argv:
        raise SystemExit(2)
    return True


def entry_point() -> None:
    """Print the overview for no command or ``-h``/``--help``; otherwise run :func:`rezdiff.cli.main`."""
    if print_overview(sys.argv[1:]):
        return
    from rezdiff.cli import entry_point as run

    run()
