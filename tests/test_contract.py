"""The contract every module class keeps, checked class by class from one table (torchgeo's pattern).

For each entry of ``FAMILIES``: a tiny config fits through the CLI; ``rezdiff.load`` rebuilds the trained
module; it samples (an autoencoder: reconstructs) at two resolutions, reproducibly per seed; ``rezdiff
sample`` writes the images it promises, lists the family's sampler settings under ``--help`` and hands
each one given on its command line to ``sample()``; a run resumed halfway with ``--ckpt_path`` ends with
the same weights, EMA, optimiser states and step as the uninterrupted one; and a two-process gloo DDP fit
completes, with rank 0 alone writing the run's files. Adding a family means adding one ``Family`` line to
``FAMILIES``.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

import rezdiff
from rezdiff.cli import main
from rezdiff.data import Synthetic
from rezdiff.data.images import load_image, save_image
from rezdiff.models import DDPM, DVDP, INFD, DiffusionModule, INFDAutoencoder, InftyDiff, MultilevelSDE
from rezdiff.models.infty_diff import InftyDiffLatent
from rezdiff.sample import SamplerOption, sampler_options
from tests.helpers import REPO, checkout_env

TINY_CONFIGS = REPO / "tests" / "configs"


@dataclass(frozen=True)
class Stage1:
    """The earlier stage a family trains on: a tiny config (plus arguments), fitted first, whose
    ``last.ckpt`` is passed to the family as ``--model.init_args.<option>``."""

    config: str
    option: str
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Family:
    """One row of the contract: the class, its tiny config in ``tests/configs``, the resolution it trains
    at and another one it supports, its stage 1 if any, and whether it is an autoencoder (it reconstructs
    images, via ``reconstruct`` and ``rezdiff sample --super_resolve``, instead of sampling from noise)."""

    id: str
    cls: type[DiffusionModule]
    config: str
    resolutions: tuple[int, int]
    stage1: Stage1 | None = None
    autoencoder: bool = False


# ∞-Diff's diffusion autoencoder (the tiny ∞-Diff with a code): the stage the latent model trains on.
INFTY_DIFF_AE = Stage1("tiny_infty_diff.yaml", "stage1_ckpt", ("--model.init_args.latent_dim=8",))
FAMILIES = [
    Family("ddpm", DDPM, "tiny_ddpm.yaml", (16, 32)),
    Family("dvdp", DVDP, "tiny_dvdp.yaml", (16, 32)),
    Family("multilevel", MultilevelSDE, "tiny_multilevel.yaml", (32, 64)),
    Family("infty_diff", InftyDiff, "tiny_infty_diff.yaml", (16, 32)),
    Family("infty_diff_latent", InftyDiffLatent, "tiny_infty_diff_latent.yaml", (16, 32), INFTY_DIFF_AE),
    Family("infd_autoencoder", INFDAutoencoder, "tiny_infd.yaml", (16, 64), autoencoder=True),
    Family("infd", INFD, "tiny_infd_latent.yaml", (16, 64), Stage1("tiny_infd.yaml", "autoencoder_ckpt")),
]

EPOCHS = 2  # the uninterrupted run; the interrupted one stops after EPOCHS // 2 and resumes
# Shrinks every tiny config the same way: 6 images (5 train, 1 val), 2 images a batch = 2 steps an epoch.
SHRINK = (
    "--trainer.max_steps=-1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--trainer.enable_progress_bar=false",
    "--data.init_args.dataset.init_args.num_images=6",
    "--data.init_args.batch_size=2",
)
SAMPLE_STEPS = 2
by_family = pytest.mark.parametrize("family", FAMILIES, ids=[family.id for family in FAMILIES])


def _fit_args(config: str, root: Path, epochs: int, *extra: str) -> list[str]:
    return ["fit", "--config", str(TINY_CONFIGS / config), "--trainer.default_root_dir", str(root)] + [
        *SHRINK,
        f"--trainer.max_epochs={epochs}",
        *extra,
    ]


class Runs:
    """The fits of one test module, made on first request and shared by every step that needs them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.clis: dict[tuple[Any, ...], Any] = {}

    def _fit(self, key: tuple[Any, ...], config: str, epochs: int, *extra: str) -> Any:
        if key not in self.clis:
            self.clis[key] = main(_fit_args(config, self.folder / "-".join(map(str, key)), epochs, *extra))
        return self.clis[key]

    def stage1_ckpt(self, stage1: Stage1) -> Path:
        """The stage-1 checkpoint, fitted once (a stage that is itself a table entry shares its fit)."""
        name = Path(stage1.config).stem
        cli = self._fit(("full", name, *stage1.args), stage1.config, EPOCHS, *stage1.args)
        return Path(cli.trainer.default_root_dir) / "checkpoints" / "last.ckpt"

    def family_args(self, family: Family) -> tuple[str, ...]:
        if family.stage1 is None:
            return ()
        return (f"--model.init_args.{family.stage1.option}={self.stage1_ckpt(family.stage1)}",)

    def full(self, family: Family) -> Any:
        """The uninterrupted run: ``EPOCHS`` epochs."""
        return self._fit(("full", Path(family.config).stem), family.config, EPOCHS, *self.family_args(family))

    def resumed(self, family: Family) -> Any:
        """``EPOCHS // 2`` epochs, then resumed from that run's ``last.ckpt`` up to ``EPOCHS``."""
        key = ("resumed", Path(family.config).stem)
        if key not in self.clis:
            root = self.folder / "-".join(key)
            extra = self.family_args(family)
            main(_fit_args(family.config, root, EPOCHS // 2, *extra))
            ckpt = root / "checkpoints" / "last.ckpt"
            self.clis[key] = main(_fit_args(family.config, root, EPOCHS, *extra, f"--ckpt_path={ckpt}"))
        return self.clis[key]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest on a loaded machine
    yield Runs(tmp_path_factory.mktemp("contract"))
    torch.set_num_threads(threads)


def _ckpt(cli: Any) -> Path:
    return Path(cli.trainer.default_root_dir) / "checkpoints" / "last.ckpt"


def _draw(family: Family, model: DiffusionModule, resolution: int, seed: int) -> Tensor:
    """Two images at ``resolution``: samples from noise seeded by ``seed`` or, for an autoencoder,
    reconstructions of two synthetic images drawn with ``seed``."""
    if family.autoencoder:
        images = Synthetic(num_images=2, resolution=family.resolutions[0], seed=seed)
        return model.reconstruct(torch.stack([images[0], images[1]]), resolution)
    return model.sample(2, resolution, steps=SAMPLE_STEPS, generator=torch.Generator().manual_seed(seed))


def _assert_same(expected: Any, got: Any, where: str) -> None:
    """Equal nested states: tensors within 1e-6, everything else exactly."""
    if isinstance(expected, Tensor):
        assert isinstance(got, Tensor), where
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6, msg=lambda m: f"{where}: {m}")
    elif isinstance(expected, Mapping):
        assert isinstance(got, Mapping) and set(got) == set(expected), (where, set(got) ^ set(expected))
        for key in expected:
            _assert_same(expected[key], got[key], f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(got) == len(expected), where
        for index, (a, b) in enumerate(zip(expected, got, strict=True)):
            _assert_same(a, b, f"{where}[{index}]")
    else:
        assert got == expected, (where, got, expected)


# ---------------------------------------------------------------------------------------------- 1, 2, 3
@by_family
def test_fit_then_load_gives_the_trained_module(family: Family, runs: Runs) -> None:
    cli = runs.full(family)
    trained = cli.trainer.lightning_module
    assert isinstance(trained, family.cls) and cli.trainer.current_epoch == EPOCHS
    model = rezdiff.load(_ckpt(cli))
    assert type(model) is family.cls and not model.training
    recorded = {key: value for key, value in trained.hparams.items() if not key.startswith("_")}
    assert dict(model.hparams) == recorded
    assert model.ema is None or int(model.ema.num_updates) > 0, "the EMA was never updated"
    assert all(not module.training for module in model.modules())
    expected = trained.state_dict()
    got = model.state_dict()
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=key)


@by_family
def test_samples_at_two_resolutions_follow_the_seed(family: Family, runs: Runs) -> None:
    model = rezdiff.load(_ckpt(runs.full(family)))
    channels = runs.full(family).datamodule.channels
    for resolution in family.resolutions:
        first = _draw(family, model, resolution, seed=1)
        assert first.shape == (2, channels, resolution, resolution), (resolution, first.shape)
        assert torch.isfinite(first).all()
        torch.testing.assert_close(_draw(family, model, resolution, seed=1), first, rtol=0, atol=0)
        other = _draw(family, model, resolution, seed=2)
        assert (other - first).abs().amax(dim=(1, 2, 3)).min() > 1e-3, "another seed gave the same image"


@by_family
def test_batch_invariant_seeds_are_bit_identical_in_any_batch_and_order(family: Family, runs: Runs) -> None:
    """``sample_seeds(..., batch_invariant=True)``: image k is bit for bit the image its seed gives alone,
    whatever the other seeds, their number or their order (issue 16.3), at the 2x size too."""
    if family.autoencoder:
        pytest.skip("an autoencoder reconstructs its inputs; it has no seeds")
    model = rezdiff.load(_ckpt(runs.full(family)))
    resolution = family.resolutions[1]
    with torch.no_grad():
        batched = model.sample_seeds([4, 2, 7], resolution, batch_invariant=True, steps=SAMPLE_STEPS)
        reordered = model.sample_seeds([7, 4], resolution, batch_invariant=True, steps=SAMPLE_STEPS)
        alone = model.sample_seeds([2], resolution, steps=SAMPLE_STEPS)
    assert torch.equal(batched[1], alone[0])
    assert torch.equal(batched[0], reordered[1]) and torch.equal(batched[2], reordered[0])


@by_family
def test_safetensors_export_rebuilds_the_same_model(family: Family, runs: Runs, tmp_path: Path) -> None:
    """``rezdiff export`` (safetensors + JSON) and ``rezdiff.load`` of the folder: the same class, plain
    hyperparameters (tuples come back as lists), every weight and buffer, the same samples."""
    ckpt = _ckpt(runs.full(family))
    model = rezdiff.load(ckpt)
    folder = main(["export", "--ckpt_path", str(ckpt), "--out", str(tmp_path / "export")])
    again = rezdiff.load(folder)
    assert type(again) is family.cls
    assert json.loads(json.dumps(dict(again.hparams))) == json.loads(json.dumps(dict(model.hparams)))
    _assert_same(model.state_dict(), again.state_dict(), "state_dict")
    torch.testing.assert_close(
        _draw(family, again, family.resolutions[0], 3),
        _draw(family, model, family.resolutions[0], 3),
        rtol=0,
        atol=0,
    )


# ---------------------------------------------------------------------------------------------- 4
@by_family
def test_sample_command_writes_the_promised_images(family: Family, runs: Runs, tmp_path: Path) -> None:
    cli = runs.full(family)
    channels = cli.datamodule.channels
    sizes = [str(r) for r in family.resolutions]
    out = tmp_path / "samples"
    args = ["sample", "--ckpt_path", str(_ckpt(cli)), "--resolution", "[" + ",".join(sizes) + "]"]
    args += ["--out", str(out), "--device", "cpu"]
    if family.autoencoder:
        inputs = [tmp_path / f"photo{i}.png" for i in range(2)]
        images = Synthetic(num_images=2, resolution=family.resolutions[0], seed=3)
        for i, path in enumerate(inputs):
            save_image(images[i], path)
        written = main([*args, "--super_resolve", "[" + ",".join(map(str, inputs)) + "]"])
        names = [f"photo{i}.png" for i in range(2)]
        with pytest.raises(SystemExit, match="is an autoencoder, it cannot sample from noise"):
            main(["sample", "--ckpt_path", str(_ckpt(cli)), "--num", "1", "--out", str(tmp_path / "no")])
    else:
        written = main([*args, "--num", "2", "--steps", str(SAMPLE_STEPS), "--seed", "3"])
        names = [f"sample_{i:05d}.png" for i in range(2)]
    expected = [f"{r}x{r}/{name}" for r in sizes for name in names] + [f"grid_{r}x{r}.png" for r in sizes]
    assert sorted(p.relative_to(out).as_posix() for p in written) == sorted(expected)
    for resolution in family.resolutions:
        for name in names:
            image = load_image(out / f"{resolution}x{resolution}" / name, channels=channels)
            assert image.shape == (channels, resolution, resolution)
    # the files hold what the model gives for the same input or seed (PNG quantisation aside)
    model, resolution = rezdiff.load(_ckpt(cli)), family.resolutions[1]
    with torch.no_grad():
        if family.autoencoder:
            first = model.reconstruct(load_image(inputs[0], channels=channels)[None], resolution)[0]
        else:
            first = model.sample_seeds([3, 4], resolution, steps=SAMPLE_STEPS)[0]  # image k: seed 3 + k
    written_first = load_image(out / f"{resolution}x{resolution}" / names[0], channels=channels)
    assert (first.clamp(-1, 1) - written_first).abs().max() <= 2 / 255 + 1e-6


# What the command line sets each numeric sampler setting to (choices and switches take all their values):
# a family whose sample() gains a numeric keyword needs a line here, or the test below fails.
SETTING_VALUES = {"eta": "0.5", "latent_steps": "2", "tile": "8", "pad": "9"}


def _cli_values(option: SamplerOption) -> list[tuple[list[str], Any]]:
    """(arguments, the value ``sample()`` must receive) for every value the test sets ``option`` to."""
    if option.kind == "choice":
        return [([option.flag, str(choice)], choice) for choice in option.choices]
    if option.kind == "bool":
        return [([option.flag], True), (["--no_" + option.flag[2:]], False)]
    assert option.name in SETTING_VALUES, f"add a test value for {option.owner}({option.name}=...)"
    text = SETTING_VALUES[option.name]
    return [([option.flag, text], option.convert(text))]


@by_family
def test_every_sampler_setting_reaches_the_family_from_the_cli(
    family: Family,
    runs: Runs,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``rezdiff sample --ckpt CKPT --help`` lists the settings read from the family's signature, and each
    one given on the command line reaches ``sample()`` (an autoencoder: ``reconstruct()``) with its value,
    while an unset one is left to the checkpoint."""
    ckpt = str(_ckpt(runs.full(family)))
    options = sampler_options(family.cls)
    assert options, f"{family.cls.__name__} exposes no sampler setting"
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "--ckpt_path", ckpt, "--help"])
    assert exit_info.value.code == 0
    listed = capsys.readouterr().out
    assert all(option.flag in listed for option in options.values()), listed
    method = "reconstruct" if family.autoencoder else "sample"
    original = getattr(family.cls, method)
    calls: list[dict[str, Any]] = []

    @functools.wraps(original)  # the CLI reads the wrapped signature
    def spy(self: Any, *args: Any, **kwargs: Any) -> Tensor:
        calls.append(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(family.cls, method, spy)
    base = ["sample", "--ckpt_path", ckpt, "--out", str(tmp_path), "--device", "cpu"]
    if family.autoencoder:
        Path(tmp_path / "in").mkdir()
        save_image(Synthetic(num_images=1, resolution=family.resolutions[0])[0], tmp_path / "in" / "a.png")
        base += [
            "--super_resolve",
            str(tmp_path / "in" / "a.png"),
            "--resolution",
            str(family.resolutions[0]),
        ]
    else:
        base += ["--num", "1", "--steps", str(SAMPLE_STEPS)]
    main(base)
    assert calls and not any(set(call) & options.keys() for call in calls), calls
    for option in options.values():
        for argv, value in _cli_values(option):
            calls.clear()
            main(base + argv)
            assert calls and all(call.get(option.name, "unset") == value for call in calls), (argv, calls)


# ---------------------------------------------------------------------------------------------- 5
@by_family
def test_resumed_run_equals_the_uninterrupted_one(family: Family, runs: Runs) -> None:
    full, resumed = runs.full(family), runs.resumed(family)
    assert resumed.trainer.global_step == full.trainer.global_step > 0
    expected, got = full.trainer.lightning_module.state_dict(), resumed.trainer.lightning_module.state_dict()
    ema = full.trainer.lightning_module.ema
    assert ema is None or any(key.startswith("ema.") for key in expected), "the EMA is not in the state"
    _assert_same(expected, got, "state_dict")
    assert len(resumed.trainer.optimizers) == len(full.trainer.optimizers) >= 1
    for index, (a, b) in enumerate(zip(full.trainer.optimizers, resumed.trainer.optimizers, strict=True)):
        _assert_same(a.state_dict(), b.state_dict(), f"optimizer[{index}]")


# ---------------------------------------------------------------------------------------------- 6
# One pair of gloo processes fits every family in turn (the interpreter starts twice, not fourteen times).
# An audit hook logs every file each rank opens for writing, renames or creates a folder for.
DDP_SCRIPT = textwrap.dedent("""
    import json, os, sys, traceback

    rank = os.environ.get("LOCAL_RANK", "0")  # rank 0 sets it only when it launches rank 1
    log = os.open(os.path.join(os.path.dirname(sys.argv[1]), f"writes-rank{rank}.txt"),
                  os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def audit(event, args):
        if event == "open":
            path, mode, flags = args
            if isinstance(mode, str):
                writes = any(letter in mode for letter in "wax+")
            else:
                writes = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        else:
            path, writes = (args[1] if event == "os.rename" else args[0]), True
        if writes and isinstance(path, (str, bytes, os.PathLike)):
            os.write(log, os.fsencode(os.path.abspath(os.fsdecode(path))) + b"\\n")

    def hook(event, args):
        if event in ("open", "os.rename", "os.mkdir"):
            audit(event, args)

    sys.addaudithook(hook)
    import torch
    torch.set_num_threads(1)
    from rezdiff.cli import main
    for run in json.load(open(sys.argv[1])):
        try:
            main(run["args"])
        except BaseException:
            traceback.print_exc()
            print(f"FAILED {run['id']} on rank {rank}", file=sys.stderr, flush=True)
""")


DDP_TIMEOUT = 600


@dataclass
class DDPResult:
    folder: Path
    process: subprocess.Popen[str]
    output: str = ""

    def wait(self) -> str:
        """The output of both ranks, once they have finished (killed after ``DDP_TIMEOUT`` seconds)."""
        if self.process.returncode is None:
            try:
                self.output, _ = self.process.communicate(timeout=DDP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.output = self.process.communicate()[0] + f"\nKILLED after {DDP_TIMEOUT} s"
        return self.output

    def writes(self, rank: int) -> list[Path]:
        path = self.folder / f"writes-rank{rank}.txt"
        return [Path(line) for line in path.read_text().splitlines()] if path.is_file() else []


@pytest.fixture(scope="module", autouse=True)
def ddp(runs: Runs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DDPResult]:
    """Starts the DDP fits of every family in the background as soon as the stage-1 checkpoints exist."""
    folder = tmp_path_factory.mktemp("ddp")
    plan = [
        {
            "id": family.id,
            "args": _fit_args(family.config, folder / family.id, EPOCHS, *runs.family_args(family))
            + ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp"],
        }
        for family in FAMILIES
    ]
    (folder / "plan.json").write_text(json.dumps(plan))
    (folder / "run.py").write_text(DDP_SCRIPT)
    env = checkout_env()
    process = subprocess.Popen(
        [sys.executable, str(folder / "run.py"), str(folder / "plan.json")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=folder,
        start_new_session=True,  # rank 0 and the rank 1 it launches: one process group to stop
    )
    yield DDPResult(folder, process)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.communicate()


@by_family
def test_ddp_fit_on_two_gloo_processes(family: Family, ddp: DDPResult) -> None:
    output = ddp.wait()
    assert f"FAILED {family.id} " not in output, output[-6000:]
    root = ddp.folder / family.id
    model = rezdiff.load(root / "checkpoints" / "last.ckpt")
    assert type(model) is family.cls
    state = torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["epoch"] == EPOCHS - 1 and state["global_step"] > 0
    assert (ddp.folder / "writes-rank1.txt").is_file(), "rank 1 never started"
    rank0 = [p for p in ddp.writes(0) if p.is_relative_to(root)]
    rank1 = [p for p in ddp.writes(1) if p.is_relative_to(root)]
    assert (root / "checkpoints" / "last.ckpt") in rank0 and (root / "config.yaml") in rank0
    assert rank1 == [], f"rank 1 wrote {rank1}"
