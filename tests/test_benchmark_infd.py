"""INFD rendering benchmark: tiled rendering's memory does not grow with the output beyond the output buffer,
and ``benchmarks/infd_render.py`` records complete results."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from rezdiff.models.infd.clif import CLIF, render_field
from tests.test_benchmarks import load_script


def test_tiled_peak_memory_is_the_output_plus_one_tile_whatever_the_output_size(single_thread: None) -> None:
    PeakMemory = load_script("common").PeakMemory
    renderer = CLIF(feature_channels=8, hidden_channels=16, num_res_blocks=2, norm_num_groups=4).eval()
    phi = torch.randn(1, 8, 16, 16, generator=torch.Generator().manual_seed(0))
    tile, pad = 32, 8  # receptive radius 6 <= pad; from 96² on, some tiles have the full padding each side

    def extra(resolution: int, tile: int | None) -> tuple[int, Tensor]:
        with torch.no_grad(), PeakMemory() as tracker:
            out = render_field(renderer, phi, resolution, tile=tile, pad=pad)
        return tracker.peak - out.nbytes, out

    padded_tile, _ = extra(tile + 2 * pad, None)  # one padded tile rendered whole: the scale of a tile's work
    tiled = {}
    whole = {}
    for resolution in (96, 160, 256):
        tiled[resolution], out = extra(resolution, tile)
        whole[resolution], reference = extra(resolution, None)
        torch.testing.assert_close(out, reference, atol=1e-4, rtol=1e-4)
    # tiled: peak minus the output buffer is flat in the output size (7x more pixels from 96² to 256²) ...
    assert max(tiled.values()) <= 1.02 * min(tiled.values()), tiled
    assert max(tiled.values()) < 2 * padded_tile, (tiled, padded_tile)
    # ... while the whole render's grows with the pixel count
    assert whole[256] > 5 * whole[96] and whole[256] > 10 * tiled[256], (whole, tiled)


def test_infd_render_benchmark_records_complete_results(tmp_path: Path, single_thread: None) -> None:
    tiny_model = ["--latent-size", "8", "--base-channels", "16", "--channel-mult", "1", "2"]
    tiny_model += ["--num-res-blocks", "1", "--norm-groups", "8", "--num-codes", "64"]
    tiny_model += ["--renderer-channels", "16", "--renderer-groups", "4"]
    report = load_script("infd_render").main(
        [*tiny_model, "--device", "cpu", "--resolutions", "32", "64", "--tile", "32", "--pad", "8"]
        + ["--norms", "global", "tile", "--probe-resolution", "16", "--memory-budget-gb", "0.001"]
        + ["--pfid-resolution", "32", "--pfid-images", "3", "--out", str(tmp_path)]
    )
    assert json.loads((tmp_path / "infd_render_cpu.json").read_text()) == report
    assert report["benchmark"] == "infd_rendering" and report["versions"]["torch"] and report["date"]
    assert report["device"]["type"] == "cpu" and "live tensor bytes" in report["memory_method"]
    assert report["model"]["phi_shape"] == [1, 16, 16, 16] and report["decode_s"] > 0
    rows = {(row["resolution"], row["mode"], row["norm"]): row for row in report["rows"]}
    assert set(rows) == {
        (r, m, n) for r in (32, 64) for m, n in [("whole", "global"), ("tiled", "global")]
    } | {
        (32, "tiled", "tile"),
        (64, "tiled", "tile"),
    }
    # the 1 MiB budget admits the 32² whole render and not the 64² one (predicted 4x the 32² peak)
    assert rows[32, "whole", "global"]["status"] == "done"
    skipped = rows[64, "whole", "global"]
    assert skipped["status"] == "skipped" and "budget" in skipped["reason"] and "time_s" not in skipped
    assert rows[64, "tiled", "global"]["tiles"] == 4 and rows[32, "tiled", "global"]["tiles"] == 1
    for row in report["rows"]:
        if row["status"] == "done":
            assert row["time_s"] > 0 and row["output_bytes"] == 3 * 4 * row["resolution"] ** 2
            assert row["peak_bytes"] >= row["output_bytes"] and row["rss_peak_bytes"] is not None
            assert row["peak_minus_output_bytes"] == row["peak_bytes"] - row["output_bytes"]
    measured = rows[32, "whole", "global"]["peak_bytes"]
    assert 0.5 * measured <= rows[32, "whole", "global"]["predicted_peak_bytes"] <= 2 * measured
    pfid = report["pfid"]["rows"]
    assert [row["label"] for row in pfid] == ["8/32", "16/32", "32/32"]
    assert all(row["images"] == 3 and row["features_s_per_image"] > 0 for row in pfid)
    assert all(row["total_s_per_image"] > row["metric_s_per_image"] > 0 for row in pfid)
