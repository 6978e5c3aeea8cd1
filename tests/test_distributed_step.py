"""MirroredStrategy on two logical CPU devices equals one device for one step.

Exact equality up to float rounding holds because (a) losses are scaled by the global
batch (objectives.reduce_loss), (b) batch norm takes the global batch's statistics, in
two passes (SyncBatchNormalization; Keras' synchronized layer uses E[x^2] - E[x]^2,
whose cancellation depends on the split: checked below on large-mean data),
(c) every random draw, dropout masks included (SeededDropout), is made for the global
batch and sliced per replica, and (d) AS-VAE's independent pairing is block-local
(rows 2k <-> 2k+1).  The critics keep the presets' dropout of 0.2.  The networks use
ELU instead of ReLU here: ReLU's kink turns a rounding-level difference at a
pre-activation near 0 into a discrete one (see tests/scripts/mirrored_step.py).
"""

import json
import os
import subprocess
import sys

import pytest

import tf_asvae

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Two subprocesses of three kinds each (one MirroredStrategy per process), so that the
# suite's two workers (pytest -n 2) can run them side by side.
KIND_GROUPS = (("vae", "asvae", "avb"), ("asvae_r", "asvae_g", "avb_ac"))


def test_kind_groups_cover_every_kind():
    assert sorted(k for g in KIND_GROUPS for k in g) == sorted(tf_asvae.MODEL_KINDS)


@pytest.mark.parametrize("kinds", KIND_GROUPS, ids=lambda g: "-".join(g))
def test_mirrored_step_equals_single_device_step(kinds, tmp_path):
    out = tmp_path / "result.json"
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "scripts",
                                                        "mirrored_step.py"), str(out), *kinds],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(out.read_text())
    for kind in kinds:
        r = results[kind]
        print(kind, r)
        assert r["max_update"] > 1e-6, "the step changed nothing"
        assert r["abs_diff_over_max_update"] < 1e-4, (kind, r)
        assert r["max_rel_update_diff"] < 1e-3, (kind, r)
        assert abs(r["loss_single"] - r["loss_mirrored"]) < 1e-3 * abs(r["loss_single"])
    # Dropout: each replica's mask is its slice of the global mask, so they differ.
    assert results["dropout"]["replicas_equal_global_slices"]
    assert results["dropout"]["replicas_differ"]
    # Batch norm on channel means of 1e3 and spread 1: two replicas give one device's
    # outputs and input gradients, and both the float64 normalisation (Keras'
    # synchronized layer is off by 0.72 on this input: E[x^2] - E[x]^2 cancels).
    bn = results["batch_norm"]
    print("batch_norm", bn)
    assert bn["max_rel_out_diff"] < 1e-3 and bn["max_rel_grad_diff"] < 1e-3, bn
    assert bn["max_out_error_vs_float64"] < 1e-3, bn
