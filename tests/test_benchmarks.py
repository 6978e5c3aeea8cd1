"""benchmarks/run.py end to end at its smallest: the synthetic (MLP) preset, --quick,
with the mixed-precision variant.  Checks that every measure is produced and is a
number that can be right, not the speeds themselves (those go to docs/RESULTS.md)."""

from __future__ import annotations

import json

import keras

from benchmarks import run as B


def test_quick_benchmark_on_the_synthetic_preset(tmp_path):
    out = tmp_path / "bench.json"
    results = B.main(["--quick", "--presets", "synthetic", "--kinds", "vae,asvae",
                      "--mixed-precision", "--out", str(out)])
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    assert json.loads(out.read_text())["settings"] == results["settings"]
    policy = "mixed_bfloat16"  # no GPU in CI
    for kind in ("keras_vae", "vae", "asvae"):
        for mode in ("graph", policy):
            r = results["train"][f"synthetic/{kind}/{mode}"]
            assert r["min"] <= r["images_per_s"] <= r["max"] and r["images_per_s"] > 0
    flops = results["flops"]
    # The Keras-example VAE and our VAE do the same arithmetic; AS-VAE's two critics and
    # second encoder pass cost more.
    assert abs(flops["synthetic/vae"] / flops["synthetic/keras_vae"] - 1) < 0.05
    assert flops["synthetic/asvae"] > 1.5 * flops["synthetic/vae"]
    for mode in ("graph", policy):
        assert results["ratios_to_keras_vae"][f"synthetic/asvae/{mode}"]["time_ratio"] > 0
    assert results["input_pipeline"]["images_per_s"] > 0
    assert set(results["sampling"]) == {"1", "64"}  # --quick batch sizes
    assert all(s["images_per_s"] > 0 for s in results["sampling"].values())
    assert results["nll"]["example_samples_per_s"] > 0
    for kind, m in results["memory"].items():
        assert "error" not in m, (kind, m)
        assert m["peak_rss_mib"] >= m["rss_before_training_mib"] > 100
    checks = results["input_checks"]["synthetic"]
    assert set(checks["share_of_step"]) == {"vae", "asvae"}
    assert checks["loop_ms_with_checks"] > 0 and checks["loop_ms_without_checks"] > 0
    table = B.render_table(results)
    assert "synthetic/asvae/mixed_bfloat16" in table and "peak RSS while training" in table
    assert "in-graph input checks" in table


def test_input_checks_only(tmp_path):
    """The in-graph input checks' cost per batch and its share of each step, alone."""
    out = tmp_path / "bench.json"
    results = B.main(["--quick", "--input-checks-only", "--presets", "synthetic",
                      "--kinds", "vae,asvae", "--out", str(out)])
    assert json.loads(out.read_text())["input_checks"] == results["input_checks"]
    assert set(results["train"]) == {"synthetic/vae/graph", "synthetic/asvae/graph"}
    checks = results["input_checks"]["synthetic"]
    assert checks["calls"] == 30 and checks["batch"] == 16
    step_ms = {k: results["train"][f"synthetic/{k}/graph"]["step_ms"] for k in ("vae", "asvae")}
    for kind, share in checks["share_of_step"].items():
        assert share == checks["ms_per_batch"] / step_ms[kind]
    assert checks["loop_ms_with_checks"] > 0 and checks["loop_ms_without_checks"] > 0
    assert "input_pipeline" not in results and "memory" not in results
    assert "synthetic in-graph input checks" in B.render_table(results)
