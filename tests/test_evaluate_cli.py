"""End-to-end tests of ``python -m trainers.evaluate`` and ``trainers.train_classifier``
on tiny runs made here (real MNIST, prepared once per session by conftest), plus the
model-facing metrics of ``tf_asvae.evaluation.model_metrics`` and the classifiers.

The estimators' mathematics is tested in test_evaluation.py; here: wiring, the report,
inference mode, determinism and errors. Settings are tiny (a few importance samples,
a handful of AIS transitions) to keep the file near two minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

import tf_asvae
from tf_asvae import data as D
from tf_asvae.evaluation import classifiers as C
from tf_asvae.evaluation import model_metrics as MM
from trainers import evaluate as E
from trainers import train_classifier as TC

from conftest import REPO, images, needs_real_files

BATCH = 8


# --------------------------------------------------------------------------------------
# Fixtures: tiny runs and a tiny classifier


@pytest.fixture(scope="module")
def mnist(prepared):
    return prepared("mnist", batch_size=BATCH)


def _make_run(folder, kind, data_config, x, **overrides):
    model = tf_asvae.build_model(kind, "mnist", **overrides)
    model.compile()
    model.fit(x, batch_size=16, epochs=1, verbose=0)  # two steps
    os.makedirs(folder, exist_ok=True)
    model.save(os.path.join(folder, "best.keras"))
    config = {"model": model.model_config.to_dict(), "data": data_config.to_dict(),
              "training": {"epochs": 1}, "seed": 0}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    return str(folder)


@pytest.fixture(scope="module")
def runs(mnist, tmp_path_factory):
    x = next(iter(D.load_split(mnist, "train", training=False).unbatch().batch(32)))
    root = tmp_path_factory.mktemp("runs")
    return {
        "vae": _make_run(root / "vae", "vae", mnist, x, posterior_flow_length=2),
        "avb": _make_run(root / "avb", "avb", mnist, x),
    }


@pytest.fixture(scope="module")
def classifier_path(mnist, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("classifier") / "mnist.keras")
    code = TC.main(["--dataset", "mnist", "--out", out, "--epochs", "1",
                    "--max-train-examples", "256", "--max-eval-examples", "64",
                    "--batch-size", "64", "--data-dir", mnist.data_dir,
                    "--manual-dir", mnist.manual_dir, "--verbose", "0"])
    assert code == 0
    return out


def _finite(value):
    return isinstance(value, (int, float)) and math.isfinite(value)


# --------------------------------------------------------------------------------------
# End to end


@needs_real_files
def test_classifier_file_and_metadata(classifier_path):
    meta = C.read_metadata(classifier_path)
    assert meta["dataset"] == "mnist" and meta["num_train_examples"] == 256
    assert meta["image_shape"] == [28, 28, 1] and 0.0 <= meta["test_accuracy"] <= 1.0
    clf = C.load_classifier(classifier_path)
    x = images((28, 28, 1), 5)
    logits, acts = clf(x)
    assert logits.shape == (5, 10) and acts.shape == (5, 128)
    # Inference mode: the 0.5 dropout before the logits is off, so calls agree.
    np.testing.assert_array_equal(logits.numpy(), clf(x)[0].numpy())
    with pytest.raises(ValueError, match="takes images of shape"):
        clf(images((32, 32, 3), 2))


@needs_real_files
def test_evaluate_vae_every_metric(runs, classifier_path, tmp_path):
    out = tmp_path / "eval" / "report.json"
    code = E.main([
        "--run-dir", runs["vae"], "--metrics", "nll,ais,bpd,rmse,is,fid",
        "--num-samples", "6", "--max-examples", "12", "--batch-size", str(BATCH),
        "--ais-steps", "3", "--ais-chains", "2", "--ais-leapfrog", "2",
        "--ais-adaptation-steps", "3", "--ais-max-examples", "4",
        "--classifier", classifier_path, "--num-splits", "3", "--num-images", "9",
        "--out", str(out), "--verbose", "0"])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["format"] == E.REPORT_FORMAT
    assert report["split"] == "test" and report["num_examples"] == 12
    assert report["model_kind"] == "vae" and report["explicit_posterior"] is True
    assert report["model_config"] == json.loads(
        json.dumps(tf_asvae.ModelConfig.from_dict(report["model_config"]).to_dict()))
    assert report["data"]["name"] == "mnist"
    metrics = report["metrics"]
    assert set(metrics) == {"nll", "ais", "bpd", "rmse", "latent_reconstruction", "is", "fid"}

    nll = metrics["nll"]
    assert nll["num_samples"] == 6 and nll["num_examples"] == 12
    assert "q(z|x)" in nll["proposal"] and "planar flow" in nll["proposal"]
    assert _finite(nll["value"]) and nll["value"] > 0
    assert _finite(nll["standard_error"]) and _finite(nll["monte_carlo_standard_error"])
    assert 1.0 <= nll["mean_effective_sample_size"] <= 6.0
    assert "Bernoulli" in nll["likelihood"]

    ais = metrics["ais"]
    assert ais["num_examples"] == 4 and ais["num_steps"] == 3 and ais["num_chains"] == 2
    assert _finite(ais["value"]) and _finite(ais["standard_error"])
    assert "annealed importance sampling" in ais["estimator"]

    bpd = metrics["bpd"]  # MNIST-type data: nats, said so
    assert bpd["unit"].startswith("nats") and "MNIST-type" in bpd["note"]
    assert bpd["value"] == pytest.approx(nll["value"])

    rmse = metrics["rmse"]
    assert rmse["unit"] == "0-255 pixel scale" and 0.0 < rmse["value"] < 255.0
    assert rmse["num_examples"] == 12 and _finite(rmse["standard_error"])
    latent = metrics["latent_reconstruction"]
    assert latent["num_samples"] == 12 and latent["value"] >= 0.0

    score, fid = metrics["is"], metrics["fid"]
    assert 1.0 - 1e-6 <= score["value"] <= 10.0 + 1e-6
    assert score["num_samples"] == 12 and score["num_splits"] == 3
    assert _finite(score["real_data_value"]) and score["classifier"] == "mnist.keras"
    assert score["classifier_metadata"]["dataset"] == "mnist"
    assert fid["value"] >= 0.0 and fid["activations_dim"] == 128
    assert fid["num_real_examples"] == 12

    for name in ("samples", "reconstructions"):
        png = out.parent / report["images"][name]
        assert png.name == f"report_{name}.png"
        grid = tf.io.decode_png(tf.io.read_file(str(png))).numpy()
        assert grid.shape[-1] == 1 and grid.shape[0] % 28 == 0 and grid.shape[1] % 28 == 0


@needs_real_files
def test_evaluate_avb_says_its_proposal(runs, tmp_path):
    out = tmp_path / "avb.json"
    code = E.main([
        "--run-dir", runs["avb"], "--metrics", "nll,ais", "--num-samples", "4",
        "--max-examples", "5", "--batch-size", "4", "--ais-steps", "2",
        "--ais-chains", "2", "--ais-leapfrog", "1", "--ais-adaptation-steps", "2",
        "--proposal-samples", "16", "--num-images", "0", "--out", str(out),
        "--verbose", "0"])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["model_kind"] == "avb" and report["explicit_posterior"] is False
    nll = report["metrics"]["nll"]
    assert nll["proposal"].startswith("r(z|x)") and "adaptive-contrast" in nll["proposal"]
    assert "16 encoder draws" in nll["proposal"]
    assert nll["num_examples"] == 5  # a padded last batch is cut back
    assert _finite(nll["value"]) and _finite(report["metrics"]["ais"]["value"])
    assert report["images"] == {}


# --------------------------------------------------------------------------------------
# Inference mode and determinism


@needs_real_files
def test_metrics_are_deterministic_and_change_nothing(mnist):
    # Dropout everywhere and batch norm: any training-mode call would show.
    model = tf_asvae.build_model("vae", "mnist", posterior_flow_length=2,
                                 encoder_dropout=0.5, decoder_dropout=0.5)
    model.build_all()
    x = next(iter(D.load_split(mnist, "test", training=False)))
    before = [v.numpy().copy() for v in model.variables]

    def everything(seed):
        return (
            MM.log_likelihood(model, x, 4, seed=seed).log_likelihood.numpy(),
            MM.ais(model, x[:2], num_steps=2, num_chains=2, num_leapfrog_steps=1,
                   num_adaptation_steps=2, seed=seed).log_likelihood.numpy(),
            MM.reconstruction_rmse(model, x, seed=seed, per_example=True).numpy(),
            MM.latent_reconstruction_error(model, 4, seed=seed),
            MM.generate(model, 4, seed=seed),
        )

    first, again, other = everything(1), everything(1), everything(2)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(first[0], other[0])
    assert not np.allclose(first[4], other[4])
    for a, b in zip(before, [v.numpy() for v in model.variables]):
        np.testing.assert_array_equal(a, b)
    # Chunking of the K samples does not change the estimate.
    chunked = MM.log_likelihood(model, x, 4, seed=1, chunk_size=3).log_likelihood.numpy()
    np.testing.assert_allclose(chunked, first[0], rtol=1e-5)
    # generate() does not depend on the batch size.
    np.testing.assert_allclose(MM.generate(model, 4, seed=1, batch_size=3), first[4],
                               atol=1e-6)


def test_flow_posterior_sampled_in_base_space_matches_density():
    """Base-space IS (no flow inverse) equals IS with q(z|x).log_prob (numerical inverse)."""
    from tf_asvae.evaluation import importance_sampled_log_likelihood

    model = tf_asvae.build_model("vae", "mnist", posterior_flow_length=2, latent_dim=8)
    model.build_all()
    x = tf.constant(images((28, 28, 1), 3))
    ours = MM.log_likelihood(model, x, 5, seed=3).log_likelihood.numpy()
    terms = MM._terms(model)

    def sample_in_z_space(xx):
        return model.posterior(xx)  # TransformedDistribution; log_prob inverts the flow

    direct = importance_sampled_log_likelihood(
        x, sample_in_z_space, terms.ais_log_likelihood_fn, terms.prior, 5, 5, seed=3)
    np.testing.assert_allclose(ours, direct.log_likelihood.numpy(), rtol=1e-4)


# --------------------------------------------------------------------------------------
# Natural images: the discretised 8-bit likelihood


def test_discretized_likelihood_bins_and_bits_per_dim():
    # The CIFAR-10 preset's shapes with narrow layers (the discretisation is what counts).
    model = tf_asvae.build_model(
        "vae", "cifar10", latent_dim=8, encoder_conv=((8, 3, 2),), encoder_mlp=(32,),
        decoder_mlp=(32,), decoder_start=(8, 8, 8), decoder_deconv=((8, 3, 2), (8, 3, 2)))
    model.build_all()
    raw = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
    raw[0, 0, 0] = [0, 255, 128]  # both edge bins
    x = ((raw + 0.5) / 256.0).astype(np.float32)

    # log P(x_uint8 | z) against the bins of the paper, computed independently.
    z = tf.random.stateless_normal([1, 2, 8], seed=[1, 2])
    got = MM._terms(model, "discretized").ais_log_likelihood_fn(tf.constant(x), z).numpy()[0]
    obs = model.observation(z).distribution
    loc = obs.loc.numpy()[0].astype(np.float64)
    scale = obs.scale.numpy()[0].astype(np.float64)
    i = raw.astype(np.float64)
    upper = np.where(raw == 255, 1.0, scipy.stats.norm.cdf((i + 1) / 256.0, loc, scale))
    lower = np.where(raw == 0, 0.0, scipy.stats.norm.cdf(i / 256.0, loc, scale))
    want = np.log(upper - lower).reshape(2, -1).sum(axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-4)

    est = MM.discretized_log_likelihood(model, x, raw, 4, seed=0)
    bpd = MM.bits_per_dim(model, x, raw, 4, seed=0)
    np.testing.assert_allclose(bpd.bits_per_dim.numpy(),
                               -est.log_likelihood.numpy() / (3072 * math.log(2.0)), rtol=1e-6)
    assert np.all(bpd.bits_per_dim.numpy() > 0)
    # (AIS uses the same likelihood callable; tracing its gradient through TFP's
    # QuantizedDistribution takes ~30 s on 2 cores, so it is not run here.)

    with pytest.raises(ValueError, match="bin centres"):
        MM.discretized_log_likelihood(model, x + 0.001, raw, 2)
    bernoulli = tf_asvae.build_model("vae", "mnist", posterior_flow="none",
                                     posterior_flow_length=0)
    bernoulli.build_all()
    with pytest.raises(ValueError, match="Gaussian decoder"):
        MM.discretized_log_likelihood(bernoulli, images((28, 28, 1), 1),
                                      np.zeros((1, 28, 28, 1), np.uint8), 2)


def test_evaluate_natural_images_reports_bits_per_dim(tmp_path, monkeypatch):
    """CIFAR-10 through tfds.testing.mock_data (random 8-bit images, no files)."""
    import tensorflow_datasets as tfds

    monkeypatch.setattr(D, "_source_reachable", lambda url, timeout=5.0: True)
    model = tf_asvae.build_model(
        "asvae", "cifar10", latent_dim=8, encoder_conv=((8, 3, 2),), encoder_mlp=(32,),
        decoder_mlp=(32,), decoder_start=(8, 8, 8), decoder_deconv=((8, 3, 2), (8, 3, 2)),
        disc_x_conv=((8, 3, 2),), disc_z_mlp=(16,), disc_joint_mlp=(16,))
    model.compile()  # (an uncompiled BaseModel cannot be saved yet)
    run = tmp_path / "run"
    run.mkdir()
    model.save(str(run / "best.keras"))
    data = D.DataConfig("cifar10", 4, manual_dir=None)
    (run / "config.json").write_text(json.dumps(
        {"model": model.model_config.to_dict(), "data": data.to_dict(), "seed": 0}))
    out = tmp_path / "cifar.json"
    with tfds.testing.mock_data(num_examples=12):
        code = E.main(["--run-dir", str(run), "--metrics", "bpd,nll,rmse",
                       "--num-samples", "3", "--max-examples", "6", "--batch-size", "4",
                       "--num-images", "4", "--out", str(out), "--verbose", "0"])
    assert code == 0
    metrics = json.loads(out.read_text())["metrics"]
    bpd, nll = metrics["bpd"], metrics["nll"]
    assert bpd["unit"] == "bits per dimension" and bpd["num_dims"] == 3072
    assert bpd["value"] == pytest.approx(nll["value"] / (3072 * math.log(2.0)))
    assert nll["bits_per_dim"] == pytest.approx(bpd["value"])
    assert "discretised 8-bit" in nll["likelihood"] and nll["num_examples"] == 6
    assert 0.0 < bpd["value"] < 20.0
    assert (tmp_path / "cifar_samples.png").exists()


# --------------------------------------------------------------------------------------
# Errors


def _fails(argv, capsys, *fragments):
    with pytest.raises(SystemExit) as info:
        E.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_unknown_metric_and_bad_values(tmp_path, capsys):
    _fails(["--run-dir", str(tmp_path), "--metrics", "nll,elbo"], capsys,
           "Unknown metric", "'elbo'", "nll", "fid")
    _fails(["--run-dir", str(tmp_path), "--num-samples", "0"], capsys, "--num-samples")
    _fails(["--run-dir", str(tmp_path), "--metrics", "fid"], capsys, "--classifier",
           "train_classifier")


def test_run_directory_without_checkpoint(tmp_path, capsys):
    _fails(["--run-dir", str(tmp_path / "absent")], capsys, "No run directory")
    _fails(["--run-dir", str(tmp_path)], capsys, "config.json")
    (tmp_path / "config.json").write_text("{}")
    _fails(["--run-dir", str(tmp_path)], capsys, "no checkpoint", "best.keras")
    (tmp_path / "final.keras").write_text("")
    _fails(["--run-dir", str(tmp_path)], capsys, "final.keras", "--checkpoint")


def test_command_line_entry_point(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "trainers.evaluate", "--run-dir", str(tmp_path),
         "--metrics", "bogus"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 2 and "Unknown metric" in result.stderr


def test_inception_without_weights_is_a_clear_error(monkeypatch, tmp_path, capsys):
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(C, "_download_inception_weights", offline)
    with pytest.raises(C.ClassifierUnavailableError) as info:
        C.load_classifier("inception_v3")
    message = str(info.value)
    assert "inception_v3_weights_tf_dim_ordering_tf_kernels.h5" in message
    assert "--inception-weights" in message and "unreachable" in message
    with pytest.raises(C.ClassifierUnavailableError, match="No InceptionV3 weights file"):
        C.load_inception_v3(weights=str(tmp_path / "missing.h5"))
    with pytest.raises(C.ClassifierUnavailableError, match="No classifier file"):
        C.load_classifier(str(tmp_path / "missing.keras"))
    # Through the program: exit status 2 and the same advice.
    (tmp_path / "config.json").write_text("{}")
    # A whole checkpoint (an empty file is now refused before the classifier is loaded).
    tf_asvae.build_model("vae", "synthetic").build_all().save(tmp_path / "best.keras")
    _fails(["--run-dir", str(tmp_path), "--metrics", "is", "--classifier", "inception_v3"],
           capsys, "inception_v3_weights_tf_dim_ordering_tf_kernels.h5")


def test_inception_preprocessing():
    grey = tf.constant(images((28, 28, 1), 2))
    out = C._inception_preprocess(grey)
    assert out.shape == (2, 299, 299, 3)
    assert float(tf.reduce_min(out)) >= -1.0 and float(tf.reduce_max(out)) <= 1.0
    np.testing.assert_allclose(out[..., 0], out[..., 2])


def test_small_classifiers_round_trip(tmp_path):
    for shape, features in (((28, 28, 1), 128), ((32, 32, 3), 256)):
        model = C.build_small_classifier(shape)
        path = str(tmp_path / f"c{shape[0]}.keras")
        model.save(path)
        clf = C.load_classifier(path)
        x = images(shape, 3)
        logits, acts = clf(x)
        assert logits.shape == (3, 10) and acts.shape == (3, features)
        np.testing.assert_allclose(logits.numpy(),
                                   model(x, training=False)["logits"].numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="28x28x1 and 32x32x3"):
        C.build_small_classifier((64, 64, 3))


def test_train_classifier_rejects_unlabelled_sets(capsys):
    with pytest.raises(SystemExit) as info:
        TC.main(["--dataset", "binarized_mnist", "--out", "x.keras"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        TC.main(["--dataset", "mnist", "--out", "x.h5", "--manual-dir", "/nonexistent"])
    assert info.value.code == 2 and ".keras" in capsys.readouterr().err
