"""SavedModel export: layout and metadata, equality with the Keras model after reload,
loading in a process without the package, saved_model_cli, bad inputs, atomicity."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import tf_asvae
from tf_asvae import MODEL_KINDS, build_model
from tf_asvae import export as export_lib
from tf_asvae.evaluation.likelihood import importance_sampled_log_likelihood

from conftest import images

CLI = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")

# Every kind on the tiny synthetic preset, plus the two code paths it lacks: the MNIST
# conv networks with a planar posterior flow, and a Gaussian likelihood with a flow on
# p(x|z) and an IAF posterior.
CASES = {kind: (kind, "synthetic", {}) for kind in MODEL_KINDS}
CASES["asvae-mnist"] = ("asvae", "mnist", dict(posterior_flow_length=2))
CASES["vae-gaussian-flows"] = ("vae", "synthetic", dict(
    likelihood="gaussian", generated_x="sample",
    flows=dict(posterior_flow="iaf", posterior_flow_length=1, iaf_hidden_units=(16,),
               decoder_flow_length=2)))


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """case -> (model, export_dir, version_dir); each case exported once, on demand."""
    root = tmp_path_factory.mktemp("exports")
    cache = {}

    def get(case):
        if case not in cache:
            kind, preset, overrides = CASES[case]
            model = build_model(kind, preset, seed=3, **overrides)
            export_dir = str(root / case)
            path = tf_asvae.export_saved_model(model, export_dir,
                                               metadata={"dataset": f"{preset}-data"})
            cache[case] = (model, export_dir, path)
        return cache[case]

    return get


def _log_likelihood_reference(model, x, num_samples, seed):
    return importance_sampled_log_likelihood(
        x, model.posterior, lambda x, z: model.observation(z).log_prob(x), model._prior(),
        num_samples, seed=seed, use_tf_function=False)


def _close(actual, expected, rtol=1e-5):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=1e-5)


# ---------------------------------------------------------------------------- layout
def test_layout_and_metadata(exports):
    model, export_dir, path = exports("asvae-mnist")
    assert path == os.path.join(export_dir, "1")
    assert sorted(os.listdir(export_dir)) == ["1"]  # no temporary directory left
    assert {"saved_model.pb", "variables", "metadata.json"} <= set(os.listdir(path))
    with open(os.path.join(path, "metadata.json")) as f:
        meta = json.load(f)
    assert meta["model_kind"] == "asvae" and meta["preset"] == "mnist"
    assert meta["image_shape"] == [28, 28, 1] and meta["latent_dim"] == 64
    assert meta["dataset"] == "mnist-data" and meta["version"] == 1
    assert meta["tf_asvae_version"] == tf_asvae.__version__
    assert meta["tensorflow_version"] == tf.__version__
    assert "q(z|x)" in meta["log_likelihood"]["proposal"]
    assert tf_asvae.ModelConfig.from_dict(meta["config"]) == model.model_config
    assert set(meta["signatures"]) == set(export_lib.SIGNATURES)
    assert meta["signatures"]["encode"]["inputs"] == {
        "images": {"dtype": "float32", "shape": [-1, 28, 28, 1]},
        "seed": {"dtype": "int64", "shape": []}}
    assert set(meta["signatures"]["decode"]["outputs"]) == {"images", "logits"}

    loaded = tf.saved_model.load(path)
    assert set(loaded.signatures) == set(export_lib.SIGNATURES) | {"serving_default"}
    for name, sig in loaded.signatures.items():  # dynamic batch dimension everywhere
        for spec in list(sig.structured_input_signature[1].values()) + list(
                sig.structured_outputs.values()):
            if spec.shape.rank:
                assert spec.shape[0] is None, (name, spec)


def test_avb_metadata_names_its_proposal(exports):
    _, _, path = exports("avb")
    meta = tf_asvae.load_exported(path).metadata
    assert meta["model_kind"] == "avb" and "r(z|x)" in meta["log_likelihood"]["proposal"]


# ---------------------------------------------------------------------------- equality
@pytest.mark.parametrize("case", list(CASES))
def test_reloaded_signatures_match_keras_model(exports, case):
    model, _, path = exports(case)
    sigs = tf.saved_model.load(path).signatures
    shape = model.model_config.image_shape
    for batch in (1, 5):
        x = images(shape, n=batch, seed=batch)
        seed = tf.constant(7, tf.int64)
        out = sigs["encode"](images=tf.constant(x), seed=seed)
        mean, z = model.encode(x, seed=7)
        _close(out["posterior_mean"], mean)
        _close(out["z"], z)

        out = sigs["decode"](z=z)
        _close(out["images"], model.decode(z))
        params = {"logits"} if model.model_config.likelihood == "bernoulli" else {"loc", "scale"}
        assert set(out) == {"images"} | params

        out = sigs["sample"](num_images=tf.constant(batch), seed=seed)
        _close(out["images"], model.sample(batch, seed=7))
        _close(model.decode(out["z"]), out["images"])

        for name in ("reconstruct", "serving_default"):
            _close(sigs[name](images=tf.constant(x))["reconstructions"], model.reconstruct(x))

        out = sigs["log_likelihood"](images=tf.constant(x), num_samples=tf.constant(3),
                                     seed=seed)
        ref = _log_likelihood_reference(model, x, 3, seed=7)
        _close(out["log_likelihood"], ref.log_likelihood)
        # Functions of exp(log-weight differences) of hundreds of nats on MNIST: graph
        # and eager rounding of the log-weights (~1e-6 relative) shows up amplified.
        _close(out["standard_error"], ref.standard_error, rtol=1e-3)
        _close(out["effective_sample_size"], ref.effective_sample_size, rtol=1e-3)
        assert out["log_likelihood"].shape == (batch,)


@pytest.mark.parametrize("case", ["avb_ac", "asvae-mnist"])
def test_exported_model_wrapper_matches_keras_model(exports, case):
    model, export_dir, path = exports(case)
    wrapped = tf_asvae.load_exported(export_dir)  # the parent: picks the latest version
    assert isinstance(wrapped, tf_asvae.ExportedModel) and wrapped.path == path
    assert wrapped.image_shape == model.model_config.image_shape
    assert wrapped.metadata["model_kind"] == model.model_config.kind
    x = images(model.model_config.image_shape, n=3)
    for got, want in zip(wrapped.encode(x, seed=4), model.encode(x, seed=4)):
        _close(got, want)
    _close(wrapped.reconstruct(x), model.reconstruct(x))
    _close(wrapped.reconstruct(x, seed=5), model.reconstruct(x, seed=5))
    _close(wrapped.reconstruct(x.astype("float64")), model.reconstruct(x))
    _close(wrapped.sample(4, seed=2), model.sample(4, seed=2))
    imgs, z = wrapped.sample(4, seed=2, return_codes=True)
    _close(wrapped.decode(z), model.decode(z))
    assert set(wrapped.decode(z, return_params=True)) >= {"images"}
    est = wrapped.log_likelihood(x, num_samples=4, seed=9)
    _close(est.log_likelihood, _log_likelihood_reference(model, x, 4, seed=9).log_likelihood)


def test_sample_is_deterministic_for_a_seed(exports):
    _, _, path = exports("vae")
    sample = tf.saved_model.load(path).signatures["sample"]
    a, b, c = (sample(num_images=tf.constant(6), seed=tf.constant(s, tf.int64))["images"]
               for s in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


# ---------------------------------------------------------------------------- no package
def test_fresh_process_without_the_package(exports, tmp_path):
    cases = ["asvae-mnist", "avb_ac"]
    inputs = {}
    for case in cases:
        model, _, path = exports(case)
        x = images(model.model_config.image_shape, n=3, seed=11)
        z = np.random.default_rng(1).normal(size=(2, model.model_config.latent_dim))
        inputs[case] = (path, x, z.astype("float32"))
        np.save(tmp_path / f"{case}-x.npy", x)
        np.save(tmp_path / f"{case}-z.npy", inputs[case][2])
    script = textwrap.dedent("""
        import os, sys
        sys.modules["tf_asvae"] = None  # any import of the package now fails
        import numpy as np
        import tensorflow as tf
        try:
            import tf_asvae  # noqa: F401
            raise SystemExit("tf_asvae is importable")
        except ImportError:
            pass
        for case, path in zip(sys.argv[1::2], sys.argv[2::2]):
            sigs = tf.saved_model.load(path).signatures
            x = tf.constant(np.load(case + "-x.npy"))
            z = tf.constant(np.load(case + "-z.npy"))
            seed = tf.constant(5, tf.int64)
            out = {}
            for name, o in [("encode", sigs["encode"](images=x, seed=seed)),
                            ("decode", sigs["decode"](z=z)),
                            ("sample", sigs["sample"](num_images=tf.constant(3), seed=seed)),
                            ("reconstruct", sigs["serving_default"](images=x)),
                            ("ll", sigs["log_likelihood"](images=x, num_samples=tf.constant(4),
                                                          seed=seed))]:
                out.update({name + "." + k: v.numpy() for k, v in o.items()})
            np.savez(case + "-out.npz", **out)
        """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    args = [a for case in cases for a in (case, inputs[case][0])]
    proc = subprocess.run([sys.executable, "-c", script] + args, cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for case in cases:
        model = exports(case)[0]
        _, x, z = inputs[case]
        out = np.load(tmp_path / f"{case}-out.npz")
        mean, zs = model.encode(x, seed=5)
        _close(out["encode.posterior_mean"], mean)
        _close(out["encode.z"], zs)
        _close(out["decode.images"], model.decode(z))
        _close(out["sample.images"], model.sample(3, seed=5))
        _close(out["reconstruct.reconstructions"], model.reconstruct(x))
        _close(out["ll.log_likelihood"],
               _log_likelihood_reference(model, x, 4, seed=5).log_likelihood)


# ---------------------------------------------------------------------------- CLI
def _cli(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return subprocess.run([CLI, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_saved_model_cli_show_and_run(exports, tmp_path):
    model, _, path = exports("asvae")
    proc = _cli("show", "--dir", path, "--all", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in export_lib.SIGNATURES + ("serving_default",):
        assert f"signature_def['{name}']" in proc.stdout
    assert "inputs['num_images']" in proc.stdout and "inputs['images']" in proc.stdout

    proc = _cli("run", "--dir", path, "--tag_set", "serve", "--signature_def", "sample",
                "--input_exprs", "num_images=3;seed=5", "--outdir", str(tmp_path / "s"),
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _close(np.load(tmp_path / "s" / "images.npy"), model.sample(3, seed=5))
    _close(model.decode(np.load(tmp_path / "s" / "z.npy")), model.sample(3, seed=5))

    x = images(model.model_config.image_shape, n=4)
    np.save(tmp_path / "x.npy", x)
    proc = _cli("run", "--dir", path, "--tag_set", "serve", "--signature_def", "reconstruct",
                "--inputs", f"images={tmp_path / 'x.npy'}", "--outdir", str(tmp_path / "r"),
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _close(np.load(tmp_path / "r" / "reconstructions.npy"), model.reconstruct(x))


def test_saved_model_cli_bad_inputs_have_clear_errors(exports, tmp_path):
    """The graph's own checks also run under saved_model_cli's TF1 session (as under
    TF Serving).  (A wrong rank or size never reaches the graph there: the CLI refuses
    to feed it, "Cannot feed value of shape (2, 2, 2) for Tensor reconstruct_images:0,
    which has shape (None, 2, 2, 1)".)"""
    _, _, path = exports("asvae")
    proc = _cli("run", "--dir", path, "--tag_set", "serve", "--signature_def", "sample",
                "--input_exprs", "num_images=0;seed=1", cwd=tmp_path)
    assert proc.returncode != 0
    assert "`num_images` must be an integer >= 1" in proc.stderr


# ---------------------------------------------------------------------------- bad inputs
def test_bad_inputs_to_loaded_signatures_fail_with_clear_messages(exports):
    _, _, path = exports("asvae-mnist")
    sigs = tf.saved_model.load(path).signatures
    x = tf.constant(images((28, 28, 1), n=2))
    seed = tf.constant(0, tf.int64)
    err = tf.errors.InvalidArgumentError
    expected = r"`images` must have shape \[batch, 28, 28, 1\]"
    # Wrong rank or size: caught before the convolution kernels see the data.
    for bad in (tf.zeros([2, 28, 28]), tf.zeros([2, 28, 28, 1, 1]), tf.zeros([2, 27, 28, 1]),
                tf.zeros([2, 28, 28, 3])):
        with pytest.raises(err, match=expected):
            sigs["reconstruct"](images=bad)
    with pytest.raises(err, match=expected):
        sigs["encode"](images=tf.zeros([2, 28, 28]), seed=seed)
    with pytest.raises(err, match=r"must lie in \[0, 1\]"):
        sigs["reconstruct"](images=x * 2.0)
    with pytest.raises(err, match=r"must lie in \[0, 1\]"):
        sigs["log_likelihood"](images=x - 1.0, num_samples=tf.constant(2), seed=seed)
    with pytest.raises(err, match=r"must lie in \[0, 1\] \(and be finite\)"):
        sigs["reconstruct"](images=x * np.nan)
    with pytest.raises(err, match="expected to be a float tensor but is a double tensor"):
        sigs["reconstruct"](images=tf.cast(x, tf.float64))
    with pytest.raises(err, match="expected to be a int64 tensor but is a int32 tensor"):
        sigs["encode"](images=x, seed=tf.constant(0))
    with pytest.raises(err, match="`seed` must be a scalar"):
        sigs["encode"](images=x, seed=tf.constant([1, 2], tf.int64))
    with pytest.raises(err, match="`num_images` must be a scalar"):
        sigs["sample"](num_images=tf.constant([3]), seed=seed)
    with pytest.raises(err, match="`num_images` must be an integer >= 1"):
        sigs["sample"](num_images=tf.constant(0), seed=seed)
    with pytest.raises(err, match="`num_samples` must be an integer >= 1"):
        sigs["log_likelihood"](images=x, num_samples=tf.constant(0), seed=seed)
    with pytest.raises(err, match=r"`z` must have shape \[batch, 64\]"):
        sigs["decode"](z=tf.zeros([2, 63]))
    with pytest.raises(err, match="`z` must be finite"):
        sigs["decode"](z=tf.fill([2, 64], np.nan))


def test_bad_inputs_to_wrapper_raise_value_errors(exports):
    _, _, path = exports("vae")
    wrapped = tf_asvae.load_exported(path)
    x = images((2, 2, 1), n=2)
    with pytest.raises(ValueError, match=r"shape \[batch, 2, 2, 1\].*\(2, 2, 2\)"):
        wrapped.reconstruct(x[..., 0])
    with pytest.raises(ValueError, match=r"must be float"):
        wrapped.encode((x * 255).astype("uint8"))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        wrapped.reconstruct(x + 1.0)
    with pytest.raises(ValueError, match=r"Codes must have shape \[batch, 2\]"):
        wrapped.decode(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="n=0"):
        wrapped.sample(0)
    with pytest.raises(ValueError, match="seed=1.5"):
        wrapped.sample(2, seed=1.5)
    with pytest.raises(ValueError, match="num_samples=0"):
        wrapped.log_likelihood(x, num_samples=0)


# ---------------------------------------------------------------------------- versions
def test_versions_overwrite_and_metadata_arguments(tmp_path):
    model = build_model("vae", "synthetic")
    export_dir = str(tmp_path / "m")
    os.makedirs(os.path.join(export_dir, "4"))  # e.g. a version being copied in by hand
    assert tf_asvae.export_saved_model(model, export_dir, metadata={"run": "b"}) \
        == os.path.join(export_dir, "5")
    assert export_lib.latest_version(export_dir) == 5  # "4" holds no SavedModel
    wrapped = tf_asvae.load_exported(export_dir)
    assert wrapped.metadata["run"] == "b" and wrapped.metadata["version"] == 5
    assert wrapped.metadata["dataset"] == "synthetic"  # default: the preset
    with pytest.raises(FileExistsError, match="overwrite=True"):
        tf_asvae.export_saved_model(model, export_dir, version=5)
    path = tf_asvae.export_saved_model(model, export_dir, version=5, overwrite=True,
                                       metadata={"run": "c"})
    assert tf_asvae.load_exported(path).metadata["run"] == "c"
    assert sorted(os.listdir(export_dir)) == ["4", "5"]
    with pytest.raises(ValueError, match="version=0"):
        tf_asvae.export_saved_model(model, export_dir, version=0)
    with pytest.raises(ValueError, match=r"\['latent_dim'\]"):
        tf_asvae.export_saved_model(model, export_dir, metadata={"latent_dim": 3})
    with pytest.raises(ValueError, match="JSON"):
        tf_asvae.export_saved_model(model, export_dir, metadata={"x": object()})
    with pytest.raises(ValueError, match="BaseModel"):
        tf_asvae.export_saved_model(object(), export_dir)
    with pytest.raises(FileNotFoundError, match="No SavedModel"):
        tf_asvae.load_exported(str(tmp_path))
    assert sorted(os.listdir(export_dir)) == ["4", "5"]


def test_failed_export_leaves_no_partial_version(exports, tmp_path, monkeypatch):
    model, _, first = exports("vae")
    export_dir = str(tmp_path / "m")
    shutil.copytree(first, os.path.join(export_dir, "1"))
    real_save = tf.saved_model.save

    def failing_save(obj, path, **kwargs):  # writes part of a SavedModel, then fails
        os.makedirs(os.path.join(path, "variables"))
        with open(os.path.join(path, "saved_model.pb"), "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        tf_asvae.export_saved_model(model, export_dir)
    assert sorted(os.listdir(export_dir)) == ["1"]
    # Overwriting an existing version that fails keeps the old one intact.
    with pytest.raises(OSError, match="disk full"):
        tf_asvae.export_saved_model(model, export_dir, version=1, overwrite=True)
    assert sorted(os.listdir(export_dir)) == ["1"]
    assert tf_asvae.load_exported(export_dir).metadata["dataset"] == "synthetic-data"

    # A failure after the SavedModel itself was written completely.
    monkeypatch.setattr(tf.saved_model, "save", real_save)

    def failing_metadata(*args, **kwargs):
        raise RuntimeError("metadata failed")

    monkeypatch.setattr(export_lib, "_build_metadata", failing_metadata)
    with pytest.raises(RuntimeError, match="metadata failed"):
        tf_asvae.export_saved_model(model, export_dir)
    assert sorted(os.listdir(export_dir)) == ["1"]


# ---------------------------------------------------------------------------- graph pieces
def test_public_methods_trace_with_seed_tensors():
    """The signatures call the models' own encode/sample code with tensor seeds."""
    for kind in ("asvae", "avb"):
        model = build_model(kind, "synthetic").build_all()
        x = images((2, 2, 1), n=3)
        encode = tf.function(lambda x, s: model.encode(x, seed=s))
        codes = tf.function(lambda n, s: model._prior_codes(n, s))
        for got, want in zip(encode(x, tf.constant(3, tf.int64)), model.encode(x, seed=3)):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(model.decode(codes(tf.constant(4), tf.constant(2))),
                                      model.sample(4, seed=2))


def test_importance_sampling_with_a_sample_count_tensor():
    model = build_model("vae", "synthetic").build_all()
    x = images((2, 2, 1), n=3)
    args = (x, model.posterior, lambda x, z: model.observation(z).log_prob(x), model._prior())
    for k, chunk in ((1, 4), (7, 3), (8, 4)):
        static = importance_sampled_log_likelihood(*args, k, chunk, seed=5,
                                                   use_tf_function=False)
        dynamic = tf.function(lambda n: importance_sampled_log_likelihood(
            *args, n, chunk, seed=tf.constant(5, tf.int64), use_tf_function=False))(
                tf.constant(k))
        for a, b in zip(dynamic, static):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        assert np.isnan(dynamic.standard_error).all() == (k == 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_samples"):
        importance_sampled_log_likelihood(*args, tf.constant(0), seed=1)
