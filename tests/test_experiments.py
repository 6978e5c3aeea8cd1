"""The experiment programs (trainers/experiments): their --quick runs write the promised
files, and the estimators behind their numbers are correct on cases with known answers.
The image experiments (mnist, cifar10, imagenet64) run end to end at --quick size: MNIST
from the real files (conftest), CIFAR-10 and ImageNet 64x64 through
``tfds.testing.mock_data``."""

import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from trainers.experiments import avb_synthetic as S
from trainers.experiments import common
from trainers.experiments import cifar10 as C10
from trainers.experiments import eight_schools as E
from trainers.experiments import imagenet64 as I64
from trainers.experiments import mnist as M

from conftest import SHARED_DATA, needs_real_files

tfd = tfp.distributions


def _check_outputs(out, figures):
    data = json.loads((out / "results.json").read_text())
    md = (out / "results.md").read_text()
    for name in figures:
        png = out / name
        assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG", name
        assert name in data["figures"]
    assert data["hardware"]["usable_cores"] >= 1
    assert data["runtime"]["total_s"] > 0
    assert "| quantity | method | ours | paper | estimator |" in md
    assert "Training budget" in md and "Hardware" in md
    return data, md


# ------------------------------------------------------------------------------ avb_synthetic

class _ClosedForm:
    """A stand-in model with a closed-form marginal: pixel 1 is on with probability
    Phi(z_1 + 1), the other three with probability 1/2, whatever z; the posterior is
    N(m, I) for every x.  Then p(x_1 = 1) = E[Phi(Z + 1)] = Phi(1 / sqrt 2) and
    KL(q(z) || p(z)) = |m|^2 / 2."""

    explicit_posterior = True

    def __init__(self, m=(0.0, 0.0)):
        self.m = tf.constant(m, tf.float32)

    def observation(self, z):
        p1 = tfd.Normal(0.0, 1.0).cdf(z[..., 0] + 1.0)
        probs = tf.stack([p1] + [0.5 * tf.ones_like(p1)] * 3, -1)
        probs = tf.reshape(probs, tf.concat([tf.shape(p1), [2, 2, 1]], 0))
        return tfd.Independent(tfd.Bernoulli(probs=probs, dtype=tf.float32), 3)

    def posterior(self, x):
        loc = tf.broadcast_to(self.m, [x.shape[0], 2])
        return tfd.MultivariateNormalDiag(loc, tf.ones_like(loc))


def test_grid_integration_matches_closed_form():
    x16 = S.all_binary_images()
    assert len({tuple(v.ravel()) for v in x16}) == 16
    ll = S.grid_log_likelihood(_ClosedForm(), x16, limit=6.0, spacing=0.05)
    p_on = 0.5 * (1 + math.erf(1 / math.sqrt(2) / math.sqrt(2)))  # Phi(1/sqrt(2))
    expected = np.where(x16.reshape(16, 4)[:, 0] == 1, p_on, 1 - p_on) * 0.125
    np.testing.assert_allclose(np.exp(ll), expected, rtol=1e-4)
    kl, mass = S.grid_aggregate_kl(_ClosedForm((0.6, -0.8)), S.four_points(), 6.0, 0.05)
    assert mass == pytest.approx(1.0, abs=1e-4)
    assert kl == pytest.approx(0.5, abs=1e-3)


def test_kde_aggregate_kl_is_close_to_the_truth():
    rng = np.random.default_rng(0)
    same = rng.normal(size=(200_000, 2))
    shifted = same + np.array([0.6, -0.8])
    kl0, inside = S.kde_aggregate_kl(same, 5.0, 0.05, 0.1)
    kl1, _ = S.kde_aggregate_kl(shifted, 5.0, 0.05, 0.1)
    assert inside > 0.999
    assert abs(kl0) < 0.03
    assert kl1 == pytest.approx(0.5, abs=0.05)


def test_grid_likelihood_of_a_model_sums_to_one_over_all_images():
    import tf_asvae

    for kind in ("vae", "avb"):
        model = tf_asvae.build_model(kind, "synthetic", seed=1)
        model.build_all()
        ll = S.grid_log_likelihood(model, S.all_binary_images(), 6.0, 0.05)
        assert np.all(ll < 0)
        assert np.sum(np.exp(ll)) == pytest.approx(1.0, abs=1e-4)


def test_avb_synthetic_quick(tmp_path):
    out = tmp_path / "avb_synthetic"
    S.main(["--out", str(out), "--quick"])
    data, md = _check_outputs(out, ["latent_space.png", "training_curves.png"])
    assert data["experiment"] == "avb_synthetic"
    for kind in S.KINDS:
        d = data["details"][kind]
        assert d["total_probability_16_images"] == pytest.approx(1.0, abs=1e-3)
        # The grid value agrees with unbiased Monte Carlo from the prior.
        assert abs(d["log_likelihood"] - d["prior_mc_log_likelihood"]) < (
            5 * d["prior_mc_standard_error"] + 1e-3)
        assert -10 < d["log_likelihood"] < 0
        assert d["reconstruction_error"] > 0
        assert np.isfinite(d["kl_aggregate_kde"])
        rows = [r for r in data["results"] if r["method"] == kind]
        assert {"log-likelihood", "reconstruction error", "ELBO",
                "KL(q(z) || p(z)) (KDE)"} <= {r["quantity"] for r in rows}
    assert "kl_aggregate_exact" in data["details"]["vae"]
    assert "kl_aggregate_exact" not in data["details"]["avb"]
    paper = {(r["quantity"], r["method"]): r["paper"] for r in data["results"]}
    assert paper[("log-likelihood", "vae")] == -1.568
    assert paper[("log-likelihood", "avb")] == -1.403
    assert "-1.5680" in md and "-1.4030" in md


# ------------------------------------------------------------------------------ eight_schools

def test_divergence_estimators_vanish_for_equal_distributions():
    rng = np.random.default_rng(0)
    a, b, c = (rng.normal(size=(1500, 10)) for _ in range(3))
    c[:, 0] += 1.0  # true KL = 0.5
    assert abs(E.energy_distance(a, b)) < 0.01
    assert E.energy_distance(a, c) > 0.1
    assert abs(E.knn_kl(a, b)) < 0.1
    assert E.knn_kl(c, a) > 0.15
    assert E.knn_kl(a, c) > 0.15


def test_eight_schools_log_density():
    from scipy.stats import norm

    theta = np.random.default_rng(0).normal(size=(5, 10)).astype(np.float32)
    mu, tau, eta = theta[:, :1], theta[:, 1:2], theta[:, 2:]
    expected = (norm.logpdf(E.Y, mu + tau * eta, E.SIGMA).sum(1) + norm.logpdf(theta).sum(1))
    np.testing.assert_allclose(E.target_log_prob(tf.constant(theta)).numpy(), expected,
                               rtol=1e-5)
    # The posterior's symmetry (tau, eta) -> (-tau, -eta).
    flipped = theta.copy()
    flipped[:, 1:] *= -1
    np.testing.assert_allclose(E.target_log_prob(tf.constant(flipped)).numpy(), expected,
                               rtol=1e-5)


def test_eight_schools_quick(tmp_path):
    out = tmp_path / "eight_schools"
    E.main(["--out", str(out), "--quick"])
    data, _ = _check_outputs(out, ["divergence.png", "marginals.png"])
    assert data["experiment"] == "eight_schools"
    for method in E.METHODS:
        curve = data["details"]["curves"][method]
        assert curve and all(np.isfinite(d["energy_distance"]) for _, d in curve)
        assert data["details"]["final"][method]["energy_distance"] > 0
    assert set(data["details"]["nuts"]) >= {"max_rhat", "min_ess"}
    assert any(r["quantity"] == "energy distance to NUTS" for r in data["results"])


def test_reflection_keeps_mu_and_balances_the_modes():
    states = np.ones((2, 1000, 10), np.float32)
    out = E.reflect(states, np.random.default_rng(0))
    assert np.all(out[..., 0] == 1)
    assert np.all(np.abs(out) == 1)
    assert np.all(out[..., 1:] == out[..., 1:2])  # one sign per draw
    assert 0.45 < np.mean(out[..., 1] > 0) < 0.55


# ------------------------------------------------------------- mnist, cifar10, imagenet64
# Trained with trainers.train and evaluated with trainers.evaluate at --quick size.

IMAGE_FIGURES = ["samples.png", "reconstructions.png", "training_curves.png"]


def _rows(data):
    return {(r["quantity"], r["method"]): r for r in data["results"]}


def _finite(value):
    return isinstance(value, (int, float)) and math.isfinite(value)


def test_mnist_entries_selection_and_paper_numbers():
    assert len(M.ENTRIES) == 10 and len({e.name for e in M.ENTRIES}) == 10
    # The CPU budget: every Table 1 kind and the 32-d Table 2 models.
    assert [e.name for e in M.select(None, M.CPU["latents_t2"])] == [
        "table1/vae", "table1/asvae_r", "table1/asvae_g", "table1/asvae",
        "table2/avb-32d", "table2/avb_ac-32d", "table2/vae-32d"]
    args = M.build_parser().parse_args(["--out", "x", "--budget", "cpu", "--epochs", "2"])
    cfg = M.settings(args)
    assert (cfg["epochs"], cfg["learning_rate"], cfg["flow_length"], cfg["num_samples"],
            cfg["max_eval_examples"], cfg["num_generated"]) == (2, 1e-3, 10, 200, 1000, 10000)
    # The learning-rate schedule reaches every model's trainers.train command; the CPU
    # budget's is per table (both models of a table share it), --lr-schedule sets all.
    argv = M.train_argv(M.ENTRIES[0], cfg, args, "run")
    assert argv[argv.index("--lr-schedule") + 1] == "constant"
    for entry in M.ENTRIES:
        argv = M.train_argv(entry, cfg, args, "run")
        assert argv[argv.index("--lr-schedule") + 1] == M.CPU_LR_SCHEDULE[entry.table]
    assert "table2 cosine decay" in common.adam_text(cfg)
    assert argv[argv.index("--adam-beta-1") + 1] == "0.9"
    args = M.build_parser().parse_args(["--out", "x", "--budget", "cpu", "--lr-schedule",
                                        "cosine"])
    argv = M.train_argv(M.ENTRIES[-1], M.settings(args), args, "run")
    assert argv[argv.index("--lr-schedule") + 1] == "cosine"
    assert "cosine decay" in common.adam_text(M.settings(args))
    with pytest.raises(ValueError, match="--quick is --budget quick"):
        M.settings(M.build_parser().parse_args(["--out", "x", "--quick", "--budget", "cpu"]))
    assert [e.name for e in M.select("table1")] == [f"table1/{k}" for k in M.KINDS_T1]
    assert [e.name for e in M.select("table2/avb_ac,32d")] == [
        "table2/avb_ac-8d", "table2/avb-32d", "table2/avb_ac-32d", "table2/vae-32d"]
    assert {e.name for e in M.select("vae")} == {"table1/vae", "table2/vae-8d", "table2/vae-32d"}
    with pytest.raises(ValueError, match="table3"):
        M.select("table1,table3")
    # Paper numbers go to the right rows, for every entry (fake evaluation results).
    cfg = dict(M.QUICK)
    fake = {"report": {"metrics": {"nll": {"value": 90.0, "num_samples": 4}}},
            "ais_report": {"metrics": {"ais": {"value": 91.0, "num_steps": 3}}},
            "elbo_report": {"metrics": {"nll": {"value": 95.0}}},
            "elbo": {"value": -96.0, "num_examples": 16}}
    for entry in M.ENTRIES:
        rows = {r["quantity"]: r for r in M.rows_for(entry, fake, cfg)}
        assert all(r["method"] == entry.label for r in rows.values())
        if entry.table == "table1":
            assert rows["NLL, nats (AS-VAE Table 1)"]["paper"] == M.PAPER_T1[entry.kind]
            assert rows["NLL as -ELBO, nats (AS-VAE Table 1)"]["ours"] == 95.0
        else:
            elbo, ais = M.PAPER_T2.get((entry.kind, entry.latent), (None, None))
            assert rows["log p(x) by AIS, nats (AVB Table 2)"]["paper"] == ais
            assert rows["log p(x) by AIS, nats (AVB Table 2)"]["ours"] == -91.0
            assert rows["ELBO, nats (AVB Table 2)"]["paper"] == elbo
            assert rows["log p(x) by IS, nats (cross-check)"]["paper"] is None
    assert M.PAPER_T1 == {"vae": 85.1, "asvae_r": 81.14, "asvae_g": 146.32, "asvae": 82.51}
    assert M.PAPER_T2[("avb_ac", 32)] == (-79.5, -80.2)
    assert ("avb", 32) not in M.PAPER_T2  # not in AVB's table


@needs_real_files
def test_mnist_quick(tmp_path, prepared, tfds_data_dir):
    prepared("mnist")
    prepared("binarized_mnist")
    out = tmp_path / "mnist"
    M.main(["--out", str(out), "--quick", "--only", "table1/asvae,table2/avb_ac-8d",
            "--data-dir", tfds_data_dir, "--manual-dir", str(SHARED_DATA)])
    data, md = _check_outputs(out, IMAGE_FIGURES)
    assert data["experiment"] == "mnist"
    rows = _rows(data)
    t1 = [rows[("NLL, nats (AS-VAE Table 1)", "asvae")],
          rows[("NLL as -ELBO, nats (AS-VAE Table 1)", "asvae")]]
    for r in t1:
        assert _finite(r["ours"]) and 0 < r["ours"] < 784 * math.log(2) * 4
        assert r["paper"] == 82.51
    assert "K = 4" in t1[0]["estimator"] and "16 test examples" in t1[0]["estimator"]
    ais = rows[("log p(x) by AIS, nats (AVB Table 2)", "avb_ac (8-d)")]
    elbo = rows[("ELBO, nats (AVB Table 2)", "avb_ac (8-d)")]
    is_ = rows[("log p(x) by IS, nats (cross-check)", "avb_ac (8-d)")]
    for r in (ais, elbo, is_):
        assert _finite(r["ours"]) and r["ours"] < 0
    assert (ais["paper"], elbo["paper"], is_["paper"]) == (-89.6, -96.3, None)
    assert "3 intermediate distributions" in ais["estimator"] and "4 test" in ais["estimator"]
    assert "82.5100" in md and "-89.6000" in md
    for name in ("table1/asvae", "table2/avb_ac-8d"):
        d = data["details"][name]
        assert d["training_status"] == "trained" and d["epochs_trained"] == 1
        assert os.path.isfile(os.path.join(d["run_dir"], "best.keras"))
        assert os.path.isfile(d["report"])
    assert data["details"]["table1/asvae"]["data"]["binarize"] == "dynamic"
    assert data["details"]["table2/avb_ac-8d"]["model"]["latent_dim"] == 8
    budget = " ".join(str(v) for v in data["budget"].values())
    assert "at most 1 epochs of 2 steps" in budget and "AIS: 3 intermediate" in budget
    # Every entry: the classifier score of its samples and the game's diagnostics.
    score = "classifier score of samples (Inception-score formula, this project's MNIST " \
            "classifier)"
    for method in ("asvae", "avb_ac (8-d)"):
        r = rows[(score, method)]
        assert _finite(r["ours"]) and 1.0 <= r["ours"] <= 10.0
        assert "16 decoder means" in r["estimator"]
        gap = rows[("train/inference gap of -log p(x|z), nats", method)]
        assert _finite(gap["ours"])
        scale = rows[("posterior scale (median over latent dimensions)", method)]
        assert _finite(scale["ours"]) and scale["ours"] > 0
    assert _finite(rows[("f_psi1 log-ratio error, relative", "asvae")]["ours"])
    assert _finite(rows[("E[log q(z|x) - log p(z)] (kl_exact), nats", "asvae")]["ours"])
    assert ("E[log q(z|x) - log p(z)] (kl_exact), nats", "avb_ac (8-d)") not in rows
    assert data["details"]["classifier"]["dataset"] == "mnist"
    assert "stabilizer 'default'" in data["budget"]["objective"]


def _mock_natural(monkeypatch):
    """Natural images through tfds.testing.mock_data (no files, no network) and no
    InceptionV3 weights (so the classifier fallback is what runs)."""
    from tf_asvae import data as D
    from tf_asvae.evaluation import classifiers as C

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.delenv(D.ENV_MANUAL_DIR, raising=False)
    monkeypatch.setattr(D, "_source_reachable", lambda url, timeout=5.0: True)
    monkeypatch.setattr(C, "_download_inception_weights", offline)


def _check_natural_rows(data, kinds, table, paper):
    rows = _rows(data)
    for kind in kinds:
        for q in (f"NLL, bits/dim ({table})", f"NLL as -ELBO, bits/dim ({table})"):
            r = rows[(q, kind)]
            # > 0; not bounded by 8: an untrained model is worse than uniform.  After two
            # steps, with batch norm recalibrated to population statistics, the narrow
            # Gaussian decoders give 230-270 bits/dim (scales near min_scale); the upper
            # bound only catches unit errors (nats for bits, sums for means).
            assert _finite(r["ours"]) and 0 < r["ours"] < 1000
            assert r["paper"] == paper.get(kind, {}).get("bpd")
        rmse = rows[(f"reconstruction RMSE, 0-255 scale ({table})", kind)]
        assert _finite(rmse["ours"]) and 0 <= rmse["ours"] <= 255
        assert rmse["paper"] == paper.get(kind, {}).get("rmse")
    return rows


def test_cifar10_quick(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    _mock_natural(monkeypatch)
    out = tmp_path / "cifar10"
    with tfds.testing.mock_data(num_examples=16):
        C10.main(["--out", str(out), "--quick"])
    data, md = _check_outputs(out, IMAGE_FIGURES)
    assert data["experiment"] == "cifar10"
    rows = _check_natural_rows(data, C10.KINDS, "AS-VAE Table 2", C10.SETUP.paper)
    assert rows[("NLL, bits/dim (AS-VAE Table 2)", "asvae_g")]["paper"] == 93.12
    assert rows[("reconstruction RMSE, 0-255 scale (AS-VAE Table 2)", "asvae")]["paper"] == 3.36
    # No InceptionV3 here: our small classifier, and the results say it is not comparable.
    clf = data["details"]["classifier"]
    assert clf["kind"] == "small" and clf["comparable_with_paper"] is False
    assert clf["metadata"]["dataset"] == "cifar10"
    assert "unreachable" in clf["reason"]
    quantity = ("Inception-score formula with a non-Inception classifier "
                "(NOT the Inception score)")
    for kind, number in (("asvae_r", 2.91), ("asvae_g", 6.89), ("asvae", 6.34)):
        r = rows[(quantity, kind)]
        assert _finite(r["ours"]) and 1 - 1e-6 <= r["ours"] <= 10 + 1e-6
        assert r["paper"] == f"not comparable (paper: {number} with Inception)"
        assert "small cifar10 CNN" in r["estimator"]
        assert rows[("Frechet distance of classifier activations", kind)]["ours"] >= 0
    assert "NOT comparable" in md and "small cifar10 CNN" in md
    assert (out / "classifier" / "cifar10.keras").is_file()
    assert data["details"]["asvae"]["model"]["latent_dim"] == 8


def test_imagenet64_quick(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    _mock_natural(monkeypatch)
    out = tmp_path / "imagenet64"
    with tfds.testing.mock_data(num_examples=16):
        I64.main(["--out", str(out), "--quick"])
    data, md = _check_outputs(out, IMAGE_FIGURES)
    assert data["experiment"] == "imagenet64"
    rows = _check_natural_rows(data, ["asvae"], "AS-VAE Table 3", I64.SETUP.paper)
    assert rows[("NLL, bits/dim (AS-VAE Table 3)", "asvae")]["paper"] == 3.71
    score = rows[("Inception score (AS-VAE Table 3)", "asvae")]
    assert score["paper"] == 11.14 and score["ours"].startswith("not computed")
    assert data["details"]["classifier"]["kind"] == "none"
    assert data["details"]["asvae"]["data"]["cache"] is False
    assert "No Inception-score formula" in md


@pytest.mark.parametrize("module, expected", [
    (C10, "cifar-10-binary.tar.gz"), (I64, "Imagenet64_val_npz.zip")])
def test_missing_data_stops_before_writing(module, expected, tmp_path, capsys):
    from tf_asvae import data as D

    out = tmp_path / "out"
    argv = ["--out", str(out), "--quick", "--manual-dir", str(tmp_path / "nowhere"),
            "--data-dir", str(tmp_path / "tfds")]
    with pytest.raises(D.MissingDataFileError, match=expected):
        module.main(argv)
    assert not out.exists()
    # As a program: exit status 2 and the data error.
    with pytest.raises(SystemExit) as info:
        C10.cli(module.SETUP.experiment, lambda: module.main(argv))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert expected in err and str(tmp_path / "nowhere") in err
    assert not out.exists()


def test_classifier_choice(tmp_path, monkeypatch):
    from argparse import Namespace

    from tf_asvae.evaluation import classifiers as C

    weights = tmp_path / "inception.h5"
    weights.write_bytes(b"")
    monkeypatch.setattr(C, "_download_inception_weights", lambda *a, **k: str(weights))
    args = Namespace(inception_weights=None)
    for setup in (C10.SETUP, I64.SETUP):
        clf = C10.resolve_classifier(setup, "auto", args)
        assert clf["kind"] == "inception_v3" and clf["argv"][-1] == str(weights)
    # With InceptionV3 the paper's number is attached as a number.
    fake = {"report": {"metrics": {"is": {"value": 5.0}, "fid": {"value": 1.0}}}}
    rows = {r["quantity"]: r for r in C10.rows_for(C10.SETUP, "asvae", fake, clf)}
    assert rows["Inception score (AS-VAE Table 2)"]["paper"] == 6.34

    def offline(*a, **k):
        raise OSError("offline")

    monkeypatch.setattr(C, "_download_inception_weights", offline)
    assert C10.resolve_classifier(C10.SETUP, "auto", args)["kind"] == "small"
    assert C10.resolve_classifier(I64.SETUP, "auto", args)["kind"] == "none"
    assert C10.resolve_classifier(C10.SETUP, "none", args)["kind"] == "none"
    with pytest.raises(ValueError, match="--inception-weights"):
        C10.resolve_classifier(C10.SETUP, "inception_v3", args)
    with pytest.raises(ValueError, match="imagenet64"):
        C10.resolve_classifier(I64.SETUP, "small", args)
    with pytest.raises(ValueError, match="--classifier"):
        C10.resolve_classifier(C10.SETUP, "resnet", args)
    with pytest.raises(ValueError, match="unknown kind"):
        C10.select(C10.SETUP, "asvae,vae")
