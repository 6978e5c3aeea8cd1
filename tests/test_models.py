"""Training semantics, every kind on every preset shape, save/load, public API."""

import numpy as np
import pytest
import tensorflow as tf
import keras

import tf_asvae
from tf_asvae import MODEL_KINDS, PRESETS, build_model

from conftest import images, tiny_overrides


def _tiny(kind, preset="synthetic", **overrides):
    model = build_model(kind, preset, **{**tiny_overrides(preset, kind), **overrides})
    model.compile()
    return model


def _values(variables):
    return [np.array(v.numpy()) for v in variables]


def _changed(before, after):
    return [not np.array_equal(a, b) for a, b in zip(before, after)]


@pytest.mark.parametrize("kind", [k for k in MODEL_KINDS if k != "vae"])
@pytest.mark.parametrize("stabilizer", ["paper", "default"])
def test_discriminator_step_changes_only_discriminator_variables(kind, stabilizer):
    model = _tiny(kind, "mnist", stabilizer=stabilizer)
    x = tf.constant(images((28, 28, 1), 8))
    gen0, disc0 = _values(model.generator_variables), _values(model.discriminator_variables)
    model.discriminator_step(x)
    gen1, disc1 = _values(model.generator_variables), _values(model.discriminator_variables)
    assert not any(_changed(gen0, gen1))
    if stabilizer == "paper":
        assert all(_changed(disc0, disc1)) or sum(_changed(disc0, disc1)) > 0.9 * len(disc0)
    else:
        # The explicit offsets may already separate the pairs (f_psi1 at initialisation:
        # +30 against -190 nats), leaving the network gradients of ~1e-14 that do not
        # move every float32 weight; some variables move.
        assert any(_changed(disc0, disc1))


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_generator_step_changes_only_encoder_decoder_variables(kind):
    model = _tiny(kind, "mnist")
    x = tf.constant(images((28, 28, 1), 8))
    gen0, disc0 = _values(model.generator_variables), _values(model.discriminator_variables)
    model.generator_step(x)
    gen1, disc1 = _values(model.generator_variables), _values(model.discriminator_variables)
    assert not any(_changed(disc0, disc1))
    assert sum(_changed(gen0, gen1)) > 0.9 * len(gen0)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_test_step_changes_nothing(kind):
    model = _tiny(kind, "mnist")
    x = images((28, 28, 1), 8)
    model.fit(x, batch_size=4, epochs=1, verbose=0)  # optimizer slots exist
    everything = model.variables + model.optimizer.variables + (
        model.disc_optimizer.variables if model.disc_optimizer else [])
    before = _values(everything)
    model.evaluate(x, batch_size=4, verbose=0)
    assert not any(_changed(before, _values(everything)))


def test_disc_steps_counts_updates():
    model = _tiny("asvae", "synthetic", disc_steps=3)
    x = images((2, 2, 1), 8)
    model.fit(x, batch_size=4, epochs=1, verbose=0)
    assert int(model.optimizer.iterations) == 2
    assert int(model.disc_optimizer.iterations) == 6


def _cosine(lr0, t, decay_steps, fraction):
    return lr0 * (fraction + (1 - fraction) * 0.5 * (1 + np.cos(np.pi * min(t, decay_steps)
                                                              / decay_steps)))


def test_cosine_schedule_moves_both_players_together_and_round_trips():
    """compile(decay_steps=T): the encoder/decoder's rate is lr0 * (f + (1 - f) * (1 +
    cos(pi t / T)) / 2) after t steps and f * lr0 from T on; the critics', which update
    disc_steps times per step, is critic_lr_scale times the same function of t."""
    model = build_model("asvae", "synthetic", **tiny_overrides("synthetic", "asvae"),
                        disc_steps=2, critic_lr_scale=3.0)
    model.compile(learning_rate=1e-2, decay_steps=4, final_lr_fraction=0.1, beta_1=0.5)
    assert model.optimizer.beta_1 == model.disc_optimizer.beta_1 == 0.5
    x = images((2, 2, 1), 12)
    for t in (0, 3, 6):  # 0, 3 and 6 steps done: before, inside and past the curve
        assert int(model.optimizer.iterations) == t
        assert int(model.disc_optimizer.iterations) == 2 * t
        np.testing.assert_allclose(float(model.optimizer.learning_rate),
                                   _cosine(1e-2, t, 4, 0.1), rtol=1e-5)
        np.testing.assert_allclose(float(model.disc_optimizer.learning_rate),
                                   3 * _cosine(1e-2, t, 4, 0.1), rtol=1e-5)
        model.fit(x, batch_size=4, epochs=1, verbose=0)
    clone = build_model("asvae", "synthetic", **tiny_overrides("synthetic", "asvae"),
                        disc_steps=2, critic_lr_scale=3.0)
    clone.compile_from_config(model.get_compile_config())
    clone.optimizer.iterations.assign(2)
    clone.disc_optimizer.iterations.assign(4)
    np.testing.assert_allclose(float(clone.optimizer.learning_rate), _cosine(1e-2, 2, 4, 0.1),
                               rtol=1e-5)
    np.testing.assert_allclose(float(clone.disc_optimizer.learning_rate),
                               3 * _cosine(1e-2, 2, 4, 0.1), rtol=1e-5)
    # Without decay_steps the rates stay constant, as in the papers.
    constant = _tiny("asvae_r", "synthetic")
    constant.fit(x, batch_size=4, epochs=1, verbose=0)
    assert float(constant.optimizer.learning_rate) == pytest.approx(1e-4)
    assert float(constant.disc_optimizer.learning_rate) == pytest.approx(1e-4)
    for bad, match in [(dict(decay_steps=0), "decay_steps=0"),
                       (dict(decay_steps=4, final_lr_fraction=1.5), "final_lr_fraction=1.5"),
                       (dict(decay_steps=4, optimizer="adam"), "decay_steps=4 with an"),
                       (dict(beta_1=1.0), "beta_1=1.0")]:
        with pytest.raises(ValueError, match=match):
            build_model("vae", "synthetic").compile(**bad)


def test_generative_half_reaches_the_decoder():
    """L_VAEz differentiates through x_theta(z, xi) into the decoder (and the encoder)."""
    for preset, overrides in (("mnist", {}), ("mnist", {"generated_x": "relaxed"}),
                              ("cifar10", {})):
        model = _tiny("asvae_g", preset, **overrides)
        x = tf.constant(images(PRESETS[preset].image_shape, 4))
        with tf.GradientTape() as tape:
            out = model._forward(x, model._seeds(0), training=True)
            loss = tf.reduce_mean(out["gen_loss"])
        grads = tape.gradient(loss, model.decoder.trainable_variables)
        assert all(g is not None for g in grads)
        assert sum(float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads) == len(grads)


def test_asvae_loss_is_the_sum_of_its_halves():
    """The full objective's per-example loss = r half + g half, recomputed here from the
    public pieces (posterior, observation, critics) with the same noise."""
    model = _tiny("asvae", "synthetic", disc_dropout=0.0, stabilizer="paper")
    x = tf.constant(images((2, 2, 1), 6))
    seeds = model._seeds(5)
    out = model._forward(x, seeds, training=False)
    z_q, _ = model.sample_posterior(x, seeds)
    z_p = model._draw(seeds, 1, 6, [2])
    x_p = tf.sigmoid(model._decode_raw(z_p))  # generated_x = "mean" (Bernoulli)
    log_px = model.observation(z_q).log_prob(x)
    log_qz = model.posterior(x_p).log_prob(z_p)
    f1 = model.critic_x(x, z_q)
    f2 = model.critic_z(x_p, z_p)
    expected = -(log_px - f1) - (log_qz - f2)
    np.testing.assert_allclose(out["gen_loss"], expected, rtol=1e-4, atol=1e-4)


def test_vae_loss_is_the_negative_elbo():
    model = _tiny("vae", "synthetic")
    x = tf.constant(images((2, 2, 1), 6))
    seeds = model._seeds(3)
    out = model._forward(x, seeds, training=False)
    z, log_q = model.sample_posterior(x, seeds)
    q = model.posterior(x)
    np.testing.assert_allclose(log_q, q.log_prob(z), rtol=1e-5, atol=1e-5)
    expected = -(model.observation(z).log_prob(x) + model._prior().log_prob(z) - log_q)
    np.testing.assert_allclose(out["gen_loss"], expected, rtol=1e-5, atol=1e-4)


# binarized_mnist and fashion_mnist share the mnist preset's networks and image shape
# (checked below), so the four distinct architectures cover every preset shape.
DISTINCT_PRESETS = ("mnist", "cifar10", "imagenet64", "synthetic")


def test_mnist_family_presets_share_one_architecture():
    for name in ("binarized_mnist", "fashion_mnist"):
        assert PRESETS[name].replace(preset="mnist") == PRESETS["mnist"]
    assert set(DISTINCT_PRESETS) | {"binarized_mnist", "fashion_mnist"} == set(PRESETS)


# Every kind on the mnist and synthetic architectures.  On the two natural-image ones,
# the kinds that between them build every network (Gaussian and noise encoders, decoder,
# critics) with the Gaussian likelihood: asvae_r, asvae_g and avb build subsets of the
# networks of asvae and avb_ac, and their objectives do not depend on the architecture.
TRAIN_CASES = ([(kind, preset) for preset in ("mnist", "synthetic") for kind in MODEL_KINDS]
               + [(kind, preset) for preset in ("cifar10", "imagenet64")
                  for kind in ("vae", "asvae", "avb_ac")])


def test_train_cases_cover_every_preset_shape_and_network():
    assert {p for _, p in TRAIN_CASES} == set(DISTINCT_PRESETS)
    assert {k for k, _ in TRAIN_CASES} == set(MODEL_KINDS)
    for preset in DISTINCT_PRESETS:
        built = [build_model(k, preset, **tiny_overrides(preset, k)) for k, p in TRAIN_CASES
                 if p == preset]
        assert {type(m.encoder).__name__ for m in built} == {"GaussianEncoder", "NoiseEncoder"}
        assert max(len(m.critics) for m in built) == 2


@pytest.mark.parametrize("kind, preset", TRAIN_CASES)
def test_models_train_on_every_preset_shape(kind, preset):
    model = _tiny(kind, preset)
    x = images(PRESETS[preset].image_shape, 4)
    history = model.fit(x, batch_size=2, epochs=1, verbose=0)
    assert history.history, "no metrics logged"
    for name, values in history.history.items():
        assert np.all(np.isfinite(values)), (name, values)
    # Every metric is logged by the training steps, except the diagnostics that only
    # the test step (val_) and the GameDiagnostics callback compute.
    expected = set(model.metric_names()) - set(model.diagnostic_names())
    assert expected <= set(history.history)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_keras_save_and_load_give_identical_outputs(kind, tmp_path):
    model = _tiny(kind, "mnist")
    x = images((28, 28, 1), 4)
    model.fit(x, batch_size=2, epochs=1, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model)
    assert loaded.model_config == model.model_config
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for fn in ("reconstruct", "encode"):
        np.testing.assert_allclose(getattr(model, fn)(x, seed=3), getattr(loaded, fn)(x, seed=3),
                                   rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(model.sample(5, seed=1), loaded.sample(5, seed=1), atol=1e-6)
    z = np.random.default_rng(1).normal(size=(3, 64)).astype("float32")
    np.testing.assert_allclose(model.decode(z), loaded.decode(z), atol=1e-6)
    # Training continues from the restored optimizer state.
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations)
    loaded.fit(x, batch_size=2, epochs=1, verbose=0)


def test_model_config_round_trip():
    model = build_model("asvae", "mnist", posterior_flow_length=3)
    clone = type(model).from_config(model.get_config())
    assert clone.model_config == model.model_config
    assert tf_asvae.model_from_config(model.model_config.to_dict()).model_config == \
        model.model_config


def test_public_methods_shapes_and_determinism():
    model = _tiny("asvae", "mnist")
    x = images((28, 28, 1), 3)
    mean, z = model.encode(x)
    assert mean.shape == (3, 64) and z.shape == (3, 64)
    assert model.decode(mean).shape == (3, 28, 28, 1)
    s1, s2, s3 = model.sample(4, seed=7), model.sample(4, seed=7), model.sample(4, seed=8)
    np.testing.assert_array_equal(s1, s2)
    assert not np.array_equal(s1, s3)
    r = model.reconstruct(x)
    assert r.shape == x.shape and float(tf.reduce_min(r)) >= 0 and float(tf.reduce_max(r)) <= 1


@pytest.mark.parametrize("call, match", [
    (lambda m: m.encode(np.zeros((2, 32, 32, 3), "float32")), r"shape=\(2, 32, 32, 3\)"),
    (lambda m: m.encode(np.full((2, 28, 28, 1), 255.0, "float32")), r"\[0, 1\].*255"),
    (lambda m: m.encode(np.zeros((2, 28, 28, 1), "uint8")), r"dtype=uint8"),
    (lambda m: m.decode(np.zeros((2, 5), "float32")), r"shape=\(2, 5\)"),
    (lambda m: m.sample(0), r"n=0"),
    (lambda m: m.compile(disc_steps=0), r"disc_steps=0"),
])
def test_bad_inputs_raise_clear_errors(call, match):
    model = build_model("asvae", "mnist", posterior_flow_length=2)
    with pytest.raises(ValueError, match=match):
        call(model)


def test_critic_auc_is_threshold_free_on_shifted_logits():
    # Logits all far below 0 (the inference-mode shift seen on MNIST): the accuracy at
    # logit 0 is 0.5, the AUC still sees the separation.
    from tf_asvae.models.base import critic_auc

    rng = np.random.default_rng(0)
    pos, neg = rng.normal(-6.6, 1.0, 500), rng.normal(-10.8, 1.0, 500)
    exact = np.mean(pos[:, None] > neg[None, :])
    metric = critic_auc("auc")
    metric.update_state(np.r_[np.ones(500), np.zeros(500)], np.r_[pos, neg])
    assert abs(float(metric.result()) - exact) < 2e-3 and exact > 0.99


@pytest.mark.parametrize("kind", ["asvae", "avb"])
def test_evaluate_logs_each_critics_auc(kind):
    model = _tiny(kind, "synthetic")
    x = images(PRESETS["synthetic"].image_shape, 8, seed=4)
    model.fit(x, batch_size=8, epochs=2, verbose=0)
    logs = model.evaluate(x, batch_size=8, verbose=0, return_dict=True)
    out = model._forward(tf.constant(x), model._seeds(0), training=False)
    assert set(out["critic_logits"]) == ({"d1", "d2"} if kind == "asvae" else {"t"})
    thresholds = np.asarray(model._metric_trackers[f"{next(iter(out['critic_logits']))}_auc"]
                            .thresholds, np.float32)
    for name, (pos, neg) in out["critic_logits"].items():
        # The trapezoidal ROC AUC over the thresholds: pairs in one bin count half.
        bins = [np.sum(tf.sigmoid(v).numpy()[:, None] > thresholds[None, :], axis=1)
                for v in (pos, neg)]
        above = np.mean(bins[0][:, None] > bins[1][None, :])
        tied = np.mean(bins[0][:, None] == bins[1][None, :])
        np.testing.assert_allclose(logs[f"{name}_auc"], above + 0.5 * tied, atol=1e-6,
                                   err_msg=name)


def test_asvae_with_planar_flow_trains_at_batch_128():
    """Regression: with a statically known batch of >= 96, grappler rewrote gradient sums
    in the differentiated planar-flow loops into temporary variables that collided
    (``AlreadyExistsError: ... inverse/while_grad/.../AddN/tmp_var``) at the first
    training step of ``asvae`` (both critics, planar flow)."""
    model = build_model("asvae", "mnist", posterior_flow_length=10)
    model.compile(learning_rate=1e-3)
    x = images((28, 28, 1), 128).astype("float32")
    data = tf.data.Dataset.from_tensor_slices(x).repeat().batch(128, drop_remainder=True)
    history = model.fit(data, steps_per_epoch=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
