"""The adversarial game's health: diagnostics against closed forms, critic offsets and
forms, the same kind of x on both sides of every critic pair, batch-norm statistics of
the data path, adaptive contrast's fixed moments, the gradient penalty."""

import numpy as np
import pytest
import tensorflow as tf

from tf_asvae import ObjectiveConfig, build_model, distributions as dists, objectives
from tf_asvae.config import (STABILIZERS, parse_objective_overrides,
                             resolve_gradient_penalty)
from tf_asvae.networks import JointDiscriminator
from tf_asvae.networks.blocks import SyncBatchNormalization

from conftest import images


def _binary(shape, n, seed=0):
    return (images(shape, n, seed) > 0.6).astype("float32")


def _zero_critic(model, name):
    """Make a critic's network output exactly 0 (its logit is then its offset alone)."""
    critic = model.critics[name]
    critic.logit.kernel.assign(tf.zeros_like(critic.logit.kernel))
    critic.logit.bias.assign(tf.zeros_like(critic.logit.bias))


# ------------------------------------------------------------------ diagnostics


def test_ratio_error_is_zero_for_a_critic_that_returns_the_exact_log_ratio():
    """f_psi1 = 0 + [log q(z|x) - log p(z)] (explicit offset, zero network) is the exact
    z-contrast: error 0.  The same zero network without the offset misses it all:
    relative error 1."""
    x = _binary((28, 28, 1), 8)
    model = build_model("asvae_r", "mnist", latent_dim=4, posterior_flow_length=2,
                        critic_offset="explicit")
    model.build_all()
    _zero_critic(model, "f1")
    d = model._critic_diagnostics(tf.constant(x), model._seeds(1))
    scale = float(tf.reduce_mean(d["d1_ratio_scale"]))
    assert scale > 0.1
    assert float(tf.reduce_max(d["d1_ratio_error"])) < 1e-3 * scale
    paper = build_model("asvae_r", "mnist", latent_dim=4, posterior_flow_length=2,
                        stabilizer="paper")
    paper.build_all()
    paper.set_weights(model.get_weights())
    d = paper._critic_diagnostics(tf.constant(x), paper._seeds(1))
    np.testing.assert_allclose(d["d1_ratio_error"], d["d1_ratio_scale"], rtol=1e-5)
    values = paper.diagnose(x)
    assert values["d1_ratio_rel"] == pytest.approx(1.0, rel=1e-5)


def test_kl_exact_matches_the_closed_form_kl_of_a_gaussian_posterior():
    """Without a flow, E_q[log q(z|x) - log p(z)] = KL(N(mu, s^2) || N(0, I)) =
    0.5 sum(s^2 + mu^2 - 1 - 2 log s); the single-sample estimates average to it."""
    model = build_model("vae", "synthetic")
    model.build_all()
    x = tf.constant(np.repeat(_binary((2, 2, 1), 1), 20000, axis=0))
    out = model._forward(x, model._seeds(2), training=False)
    loc, scale, _ = model.encoder(x[:1], training=False)
    exact = 0.5 * float(tf.reduce_sum(scale ** 2 + loc ** 2 - 1 - 2 * tf.math.log(scale)))
    kl = out["metrics"]["kl_exact"].numpy()
    se = kl.std() / np.sqrt(len(kl))
    assert abs(kl.mean() - exact) < 4 * se + 1e-4


def test_posterior_scale_is_the_median_of_the_encoders_scale():
    model = build_model("asvae", "mnist", latent_dim=5, posterior_flow_length=2)
    model.build_all()
    x = tf.constant(_binary((28, 28, 1), 6))
    out = model._forward(x, model._seeds(0), training=False)
    _, scale, _ = model.encoder(x, training=False)
    np.testing.assert_allclose(out["metrics"]["posterior_scale"],
                               np.median(scale.numpy(), axis=-1), rtol=1e-6)


def test_recon_gap_is_zero_without_batch_norm_and_measures_it_with():
    x = _binary((28, 28, 1), 8)
    plain = build_model("vae", "mnist", latent_dim=4, posterior_flow_length=2,
                        network=dict(batch_norm=False))
    plain.build_all()
    assert abs(plain.diagnose(x)["recon_gap"]) < 1e-3
    normed = build_model("vae", "mnist", latent_dim=4, posterior_flow_length=2)
    normed.build_all()  # moving statistics at their initial 0 / 1: not the batch's
    assert abs(normed.diagnose(x)["recon_gap"]) > 1.0


def test_diagnostics_are_logged_in_validation_and_by_the_callback():
    from tf_asvae.callbacks import GameDiagnostics

    model = build_model("asvae_r", "mnist", latent_dim=4, posterior_flow_length=2)
    model.compile()
    x = _binary((28, 28, 1), 8)
    history = model.fit(x, batch_size=4, epochs=1, verbose=0, validation_data=(x,),
                        callbacks=[GameDiagnostics(x)]).history
    for name in model.diagnostic_names():
        assert np.isfinite(history["val_" + name][0])
        assert np.isfinite(history[name][0])
    assert history["val_d1_ratio_rel"][0] == pytest.approx(
        history["val_d1_ratio_error"][0] / history["val_d1_ratio_scale"][0], rel=1e-5)


# ------------------------------------------------------------------ critic offsets


@pytest.mark.parametrize("offset", ["none", "prior", "explicit"])
def test_asvae_objective_is_eq_11_with_the_critics_offsets(offset):
    """Per example: loss = -(log p(x|z) - f1(x, z)) - (log q(z|x~) - f2(x~, z)), with each
    critic's logit = network + offset (ObjectiveConfig.critic_offset and
    generative_critic_offset), recomputed from
    the public pieces with the same noise."""
    model = build_model("asvae", "synthetic", critic_offset=offset,
                        generative_critic_offset=offset, disc_dropout=0.0,
                        generated_x="straight_through")
    model.build_all()
    x = tf.constant(_binary((2, 2, 1), 6))
    seeds = model._seeds(5)
    out = model._forward(x, seeds, training=False)
    prior = model._prior()
    z_q, log_q = model.sample_posterior(x, seeds)
    z_p = model._draw(seeds, 1, 6, [2])
    raw_p = model._decode_raw(z_p)
    x_p = model._generate_x(raw_p, seeds)
    assert set(np.unique(x_p.numpy())) <= {0.0, 1.0}      # straight-through: binary
    log_px = model.observation(z_q).log_prob(x)
    log_qz = model.posterior(x_p).log_prob(z_p)
    f1 = model.critic_x(x, z_q)
    f2 = model.critic_z(x_p, z_p)
    if offset == "prior":
        f1 = f1 - prior.log_prob(z_q)
        f2 = f2 + prior.log_prob(z_p)
    elif offset == "explicit":
        f1 = f1 + log_q - prior.log_prob(z_q)
        f2 = f2 + model.observation(z_p).log_prob(x_p) + prior.log_prob(z_p)
    expected = -(log_px - f1) - (log_qz - f2)
    np.testing.assert_allclose(out["gen_loss"], expected, rtol=1e-4, atol=1e-3)


def test_explicit_offset_makes_asvae_r_the_elbo_minus_the_network():
    """With the explicit offset and a zero network, AS-VAE-r's loss is the VAE's -ELBO."""
    model = build_model("asvae_r", "synthetic", critic_offset="explicit")
    model.build_all()
    _zero_critic(model, "f1")
    vae = build_model("vae", "synthetic")
    vae.build_all()
    for v_src, v_dst in zip(model.encoder.weights + model.decoder.weights,
                            vae.encoder.weights + vae.decoder.weights):
        v_dst.assign(v_src)
    x = tf.constant(_binary((2, 2, 1), 6))
    seeds = model._seeds(3)
    np.testing.assert_allclose(model._forward(x, seeds, False)["gen_loss"],
                               vae._forward(x, seeds, False)["gen_loss"], rtol=1e-5,
                               atol=1e-5)


def test_avb_offsets():
    x = tf.constant(_binary((2, 2, 1), 6))
    for kind, offset, expect_prior in (("avb", "explicit", False), ("avb", "none", False),
                                       ("avb", "prior", True),
                                       ("avb_ac", "explicit", False),
                                       ("avb_ac", "prior", True)):
        model = build_model(kind, "synthetic", critic_offset=offset)
        model.build_all()
        _zero_critic(model, "t")
        out = model._forward(x, model._seeds(1), training=False)
        pos, neg = out["critic_logits"]["t"]
        assert (float(tf.reduce_max(tf.abs(pos))) > 0.5) == expect_prior, (kind, offset)
        if expect_prior:
            assert float(tf.reduce_min(pos)) >= 0.5 * np.log(2 * np.pi) * 2 - 1e-5


# ------------------------------------------------------------------ the kind of x


def test_critics_see_binary_images_on_both_sides_of_every_pair(monkeypatch):
    """With the default straight-through generated x, every image a critic sees is
    binary, real (here grey levels, drawn as Bernoulli(x)) and generated alike."""
    model = build_model("asvae", "mnist", latent_dim=4, posterior_flow_length=2)
    model.build_all()
    seen = []
    for critic in model.critics.values():
        original = critic.call

        def record(x, z, *args, _original=original, **kwargs):
            seen.append(np.asarray(x))
            return _original(x, z, *args, **kwargs)

        monkeypatch.setattr(critic, "call", record)
    x = tf.constant(images((28, 28, 1), 8))          # grey levels in (0, 1)
    model._forward(x, model._seeds(0), training=True)
    assert len(seen) == 2
    for batch in seen:
        assert set(np.unique(batch)) <= {0.0, 1.0}
    # The paper's setting keeps generated probabilities against real images.
    paper = build_model("asvae", "mnist", latent_dim=4, posterior_flow_length=2,
                        stabilizer="paper")
    assert paper.model_config.objective.generated_x == "mean"


def test_straight_through_bernoulli_is_binary_with_the_probabilities_gradient():
    logits = tf.constant([[-2.0, 0.0, 3.0]])
    u = tf.constant([[0.05, 0.7, 0.2]])
    with tf.GradientTape() as tape:
        tape.watch(logits)
        x = dists.straight_through_bernoulli(logits, u)
        y = tf.reduce_sum(x * tf.constant([[1.0, 2.0, 3.0]]))
    np.testing.assert_array_equal(x, [[1.0, 0.0, 1.0]])
    p = tf.sigmoid(logits)
    np.testing.assert_allclose(tape.gradient(y, logits), [[1, 2, 3]] * p * (1 - p), rtol=1e-6)


def test_generative_half_reaches_the_decoder_through_straight_through_samples():
    model = build_model("asvae_g", "mnist", latent_dim=4, posterior_flow_length=2)
    assert model.model_config.objective.generated_x == "straight_through"
    # The synthetic preset's 2x2 images take the probabilities (docs/RESULTS.md); an
    # explicit choice wins, and a named stabilizer resets it with the other remedies.
    assert build_model("asvae", "synthetic").model_config.objective.generated_x == "mean"
    for kwargs, expected in (({"generated_x": "straight_through"}, "straight_through"),
                             ({"stabilizer": "default"}, "straight_through"),
                             ({"stabilizer": "paper"}, "mean")):
        assert build_model("asvae", "synthetic", **kwargs).model_config.objective \
            .generated_x == expected
    x = tf.constant(_binary((28, 28, 1), 4))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model._forward(x, model._seeds(0), training=True)["gen_loss"])
    grads = tape.gradient(loss, model.decoder.trainable_variables)
    assert all(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads)


@pytest.mark.parametrize("weight", [1.0, 0.25])
def test_generative_weight_scales_the_second_half_only(weight):
    """gen_loss = -L_VAEx - lambda * L_VAEz per example; the critics' losses do not move."""
    kwargs = dict(disc_dropout=0.0, generated_x="straight_through")
    model = build_model("asvae", "synthetic", generative_weight=weight, **kwargs)
    model.build_all()
    x = tf.constant(_binary((2, 2, 1), 6))
    seeds = model._seeds(4)
    out = model._forward(x, seeds, training=False)
    m = out["metrics"]
    expected = (m["recon_x"] + m["adv_x"]) + weight * (m["recon_z"] + m["adv_z"])
    np.testing.assert_allclose(out["gen_loss"], expected, rtol=1e-5, atol=1e-4)
    paper = build_model("asvae", "synthetic", **kwargs)
    paper.build_all()
    for v_src, v_dst in zip(model.weights, paper.weights):
        v_dst.assign(v_src)
    ref = paper._forward(x, seeds, training=False)
    for name in ("d1", "d2"):
        np.testing.assert_allclose(out["disc_losses"][name], ref["disc_losses"][name],
                                   rtol=1e-6)


def test_recon_z_to_decoder_false_keeps_the_z_reconstruction_out_of_the_decoder():
    """Without it, log q(z | x_theta(z)) gives the encoder a gradient and the decoder none;
    -f_psi2 still reaches the decoder, and the loss's value is unchanged."""
    x = tf.constant(_binary((28, 28, 1), 4))
    losses = {}
    for flag in (True, False):
        model = build_model("asvae_g", "mnist", latent_dim=4, posterior_flow_length=2,
                            recon_z_to_decoder=flag, disc_dropout=0.0)
        model.build_all()
        if flag:
            weights = [w.numpy() for w in model.weights]
        else:
            for w, value in zip(model.weights, weights):
                w.assign(value)
        variables = model.decoder.trainable_variables + model.encoder.trainable_variables
        n_dec = len(model.decoder.trainable_variables)
        with tf.GradientTape(persistent=True) as tape:
            out = model._forward(x, model._seeds(0), training=True)
            recon_z = tf.reduce_mean(out["metrics"]["recon_z"])
            adv_z = tf.reduce_mean(out["metrics"]["adv_z"])
        g_recon = tape.gradient(recon_z, variables)
        g_adv = tape.gradient(adv_z, model.decoder.trainable_variables)
        decoder_reached = [g is not None and float(tf.reduce_sum(tf.abs(g))) > 0
                           for g in g_recon[:n_dec]]
        assert any(decoder_reached) == flag
        assert all(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0
                   for g in g_recon[n_dec:] if g is not None)
        assert any(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in g_adv)
        losses[flag] = out["gen_loss"].numpy()
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-6)


# ------------------------------------------------------------------ batch norm


def test_sync_batch_norm_without_update_uses_batch_statistics_and_keeps_moving_ones():
    layer = SyncBatchNormalization()
    x = tf.constant(np.random.default_rng(0).normal(3.0, 2.0, (64, 5)).astype("float32"))
    layer.build(x.shape)
    before = [v.numpy().copy() for v in (layer.moving_mean, layer.moving_variance)]
    y = layer(x, training=True, update_stats=False)
    np.testing.assert_allclose(tf.reduce_mean(y, 0), 0.0, atol=1e-5)
    np.testing.assert_allclose(tf.math.reduce_std(y, 0), 1.0, atol=1e-3)
    for b, v in zip(before, (layer.moving_mean, layer.moving_variance)):
        np.testing.assert_array_equal(b, v.numpy())
    layer(x, training=True)
    assert not np.array_equal(before[0], layer.moving_mean.numpy())


@pytest.mark.parametrize("kind", ["asvae", "asvae_g"])
def test_moving_statistics_describe_the_data_path_only(kind):
    """After a training step, the encoder's and decoder's moving statistics are those of
    their data paths alone (the encoder on the real batch, the decoder on its posterior
    codes): the generated paths left them alone."""
    model = build_model(kind, "mnist", latent_dim=4, posterior_flow_length=2)
    model.compile()
    reference = build_model(kind, "mnist", latent_dim=4, posterior_flow_length=2)
    reference.build_all()
    reference.set_weights(model.get_weights())
    x = tf.constant(_binary((28, 28, 1), 8))
    seeds = model._seeds(int(model.optimizer.iterations))
    model.train_step(x)
    z = reference.sample_posterior(x, seeds, training=True)[0]          # data paths
    reference._decode_raw(z, True, reference._dropout_seed(seeds, 0))

    def moving(m):
        return [v.numpy() for layer in (m.encoder, m.decoder) for v in layer.weights
                if "moving" in v.path]

    for a, b in zip(moving(model), moving(reference)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["vae", "avb_ac"])
def test_recalibrated_batch_norm_makes_inference_mode_match_training_mode(kind):
    """After ``recalibrate_batch_norm(x)``, the moving statistics are x's batch
    statistics at the current weights: on x itself (with the same noise, the same seed)
    the reconstruction term is the same in inference and in training mode (gap 0, where
    the initial statistics give a gap of nats), and no weight changed."""
    overrides = dict(latent_dim=4) if kind.startswith("avb") else dict(
        latent_dim=4, posterior_flow_length=2)
    model = build_model(kind, "mnist", **overrides)
    model.build_all()
    x = _binary((28, 28, 1), 16)
    assert abs(model.diagnose(x)["recon_gap"]) > 1.0
    weights = [w.numpy().copy() for w in model.trainable_weights]
    assert model.recalibrate_batch_norm(x) > 0
    assert abs(model.diagnose(x)["recon_gap"]) < 1e-2
    for before, w in zip(weights, model.trainable_weights):
        np.testing.assert_array_equal(before, w.numpy())
    assert all(layer.momentum == 0.99 for layer in model._flatten_layers()
               if isinstance(layer, SyncBatchNormalization))


# ------------------------------------------------------------------ adaptive contrast


def test_adaptive_contrast_moments_are_a_function_of_x_alone():
    """Common random numbers: r(z|x)'s mean and deviation do not change between steps
    or batch compositions, so a critic that sees x can estimate KL(q || r) without a
    bias from the moments' noise."""
    model = build_model("avb_ac", "synthetic")
    model.build_all()
    x = tf.constant(_binary((2, 2, 1), 6))
    h = model.encoder.features(x)
    r1 = model._contrast(h)
    r2 = model._contrast(tf.reverse(h, [0]))
    np.testing.assert_allclose(r1.mean(), tf.reverse(r2.mean(), [0]), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(r1.covariance(), tf.reverse(r2.covariance(), [0]),
                               rtol=1e-4, atol=1e-7)
    a = model._forward(x, model._seeds(1), training=False)["metrics"]["log_r"]
    b = model._forward(x, model._seeds(2), training=False)["metrics"]["log_r"]
    assert not np.allclose(a, b)   # z differs between steps; r does not (checked above)


def test_moment_matched_gaussian_diagonal_and_full():
    rng = np.random.default_rng(4)
    a = np.array([[1.0, 0.0], [0.9, 0.2]])
    samples = (rng.normal(size=(5000, 3, 2)) @ a.T + [1.0, -2.0]).astype("float32")
    full = dists.moment_matched_gaussian(tf.constant(samples), "full", jitter=0.0,
                                         shrinkage=0.0)
    diag = dists.moment_matched_gaussian(tf.constant(samples), "diagonal", jitter=0.0)
    for b in range(3):
        np.testing.assert_allclose(full.covariance()[b], np.cov(samples[:, b].T, bias=True),
                                   rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(diag.stddev()[b], samples[:, b].std(0), rtol=1e-4)
    # Whitening: z~ = L^-1 (z - mean) has identity covariance under the full fit only.
    white = full.bijector.inverse(tf.constant(samples)).numpy()
    np.testing.assert_allclose(np.cov(white[:, 0].T, bias=True), np.eye(2), atol=1e-4)
    assert abs(np.cov(diag.bijector.inverse(tf.constant(samples)).numpy()[:, 0].T)[0, 1]) > 0.5
    with pytest.raises(ValueError, match="covariance='block'"):
        dists.moment_matched_gaussian(tf.constant(samples), "block")


@pytest.mark.parametrize("covariance,encoder", [("diagonal", "mlp"), ("full", "mlp"),
                                                ("full", "basis")])
def test_adaptive_contrast_objective_is_eq_4_2_with_the_models_contrast(covariance, encoder):
    model = build_model("avb_ac", "synthetic", ac_covariance=covariance, disc_dropout=0.0,
                        noise_encoder=encoder, noise_basis=3, noise_basis_mlp=(5,))
    model.build_all()
    x = tf.constant(_binary((2, 2, 1), 6))
    seeds = model._seeds(2)
    out = model._forward(x, seeds, training=False)
    h = model.encoder.features(x)
    z = model._encode_noise(h, seeds, 0, 6)
    r = model._contrast(h)
    assert isinstance(r, dists.tfd.MultivariateNormalTriL) == (covariance == "full")
    t = model.critic_t(x, r.bijector.inverse(z))
    expected = -(-t - r.log_prob(z) + model.observation(z).log_prob(x)
                 + model._prior().log_prob(z))
    np.testing.assert_allclose(out["gen_loss"], expected, rtol=1e-4, atol=1e-3)


def _linear_basis_moments(enc, h):
    """(E[z|x], Cov[z|x], a) of a basis encoder whose basis vectors are linear in the
    noise, v_k = W_k^T eps_k + b_k: z_0 + sum_k a_k b_k and
    sum_k diag(a_k) W_k^T W_k diag(a_k), in float64."""
    z0, a = (t.numpy().astype(np.float64) for t in enc.coefficients(h))
    w = enc.basis_kernels[0].numpy().astype(np.float64)     # [K, E, D]
    b = enc.basis_biases[0].numpy().astype(np.float64)      # [K, D]
    mean = z0 + np.einsum("bkd,kd->bd", a, b)
    cov = np.einsum("bkd,kde,bke->bde", a, np.einsum("kei,kej->kij", w, w), a)
    return mean, cov, a


def test_basis_noise_encoder_moments_are_the_codes_moments():
    """z = z_0(x) + sum_k a_k(x) v_k(eps_k): with a linear basis v_k = W_k^T eps_k + b_k
    the exact moments are E[z|x] = z_0 + sum_k a_k b_k and
    Cov[z|x] = sum_k diag(a_k) W_k^T W_k diag(a_k); ``moments`` from many draws matches
    them, and its mean equals the codes' mean for the same draws exactly (linearity)."""
    from tf_asvae.networks import BasisNoiseEncoder

    enc = BasisNoiseEncoder(3, 2, num_basis=4, mlp=(6,), basis_units=(), batch_norm=False)
    x = tf.constant(images((4, 4, 1), 5))
    eps = tf.random.stateless_normal([5, enc.noise_size], seed=(1, 2))
    enc(x, eps)
    h = enc.features(x) * 20.0        # coefficients well away from their small start
    mean, cov, a = _linear_basis_moments(enc, h)
    draws = tf.random.stateless_normal([200_000, enc.noise_size], seed=(3, 4))
    m_full, c_full = enc.moments(h, draws, "full")
    m_diag, v_diag = enc.moments(h, draws, "diagonal")
    np.testing.assert_allclose(m_full, mean, atol=2e-2 * np.abs(cov).max() ** 0.5)
    np.testing.assert_allclose(c_full, cov, rtol=0.02, atol=0.02 * np.abs(cov).max())
    np.testing.assert_allclose(v_diag, np.diagonal(cov, axis1=1, axis2=2), rtol=0.02)
    np.testing.assert_allclose(m_diag, m_full)
    few = draws[:50]
    codes = enc.head(h, tf.broadcast_to(few[:, None], [50, 5, enc.noise_size]))
    np.testing.assert_allclose(enc.moments(h, few)[0], tf.reduce_mean(codes, 0),
                               rtol=1e-5, atol=1e-5)
    # The coefficients start small: a_k(x) = elu(u - 5) + 1 > 0.
    assert (a > 0).all()
    with pytest.raises(ValueError, match="num_basis=0"):
        BasisNoiseEncoder(3, 2, num_basis=0)


@pytest.mark.parametrize("num,blocks,block", [(64, 1, 32), (9, 3, 4)])
def test_matched_draws_have_the_standard_normals_moments_exactly(num, blocks, block):
    draws = dists.matched_normal_draws(num, blocks, block, (5, 6))
    assert draws.shape == (num, blocks * block) and draws.dtype == np.float32
    d = draws.astype(np.float64).reshape(num, blocks, block)
    np.testing.assert_allclose(d.mean(0), 0.0, atol=1e-7)
    for k in range(blocks):
        np.testing.assert_allclose(d[:, k].T @ d[:, k] / num, np.eye(block), atol=1e-6)
    # Antithetic pairs (and a zero vector for an odd count).
    np.testing.assert_array_equal(draws[: num // 2], -draws[num // 2: 2 * (num // 2)])
    if num % 2:
        np.testing.assert_array_equal(draws[-1], 0.0)
    # Deterministic in the seed; plain N(0, I) draws of the same size are not matched.
    np.testing.assert_array_equal(draws, dists.matched_normal_draws(num, blocks, block,
                                                                    (5, 6)))
    plain = np.random.default_rng(0).standard_normal((num, block))
    assert np.abs(plain.T @ plain / num - np.eye(block)).max() > 0.1


def test_matched_draws_with_too_few_pairs_match_the_mean_only():
    d = dists.matched_normal_draws(16, 1, 32, (1, 2)).astype(np.float64)
    np.testing.assert_allclose(d.mean(0), 0.0, atol=1e-7)
    assert np.linalg.matrix_rank(d.T @ d) == 8
    with pytest.raises(ValueError, match="num=1"):
        dists.matched_normal_draws(1, 1, 4, (1, 2))
    with pytest.raises(ValueError, match="ac_draws='sobol'"):
        ObjectiveConfig(ac_draws="sobol")


def test_a_config_saved_before_ac_draws_existed_keeps_plain_draws():
    from tf_asvae.config import ModelConfig

    saved = build_model("avb_ac", "synthetic").model_config.to_dict()
    assert saved["objective"]["ac_draws"] == "matched"       # the default now
    del saved["objective"]["ac_draws"]                        # as written before cd81c95
    assert ModelConfig.from_dict(saved).objective.ac_draws == "random"
    # A hand-written partial objective still gets the stabilizer's value.
    partial = dict(saved, objective={"critic_form": "quadratic"})
    assert ModelConfig.from_dict(partial).objective.ac_draws == "matched"


@pytest.mark.parametrize("draws", ["random", "matched"])
def test_matched_draws_give_the_exact_contrast_of_a_code_linear_in_the_noise(draws):
    """With the basis encoder's basis vectors linear in the noise (v_k = W_k^T eps_k + b_k),
    q(z|x) is Gaussian: mean z_0 + sum_k a_k b_k, covariance
    sum_k diag(a_k) W_k^T W_k diag(a_k).  Adaptive contrast's r(z|x) from 16 matched
    draws is that Gaussian to rounding; from 16 plain draws it is not."""
    model = build_model("avb_ac", "synthetic", noise_encoder="basis", noise_basis=3,
                        noise_basis_mlp=(), noise_dim=4, ac_covariance="full",
                        ac_num_samples=16, ac_draws=draws)
    model.build_all()
    enc = model.encoder
    x = tf.constant(_binary((2, 2, 1), 5))
    h = enc.features(x) * 20.0        # coefficients well away from their small start
    mean, cov, _ = _linear_basis_moments(enc, h)
    r = model._contrast(h)
    # r's covariance carries the ridge of gaussian_from_moments: remove it.
    ridge = 1e-2 * np.trace(cov, axis1=1, axis2=2) / cov.shape[-1] + 1e-5
    got = r.covariance().numpy() - ridge[:, None, None] * np.eye(cov.shape[-1])
    error = np.abs(got - cov).max() / np.abs(cov).max()
    if draws == "matched":
        np.testing.assert_allclose(r.mean(), mean, atol=1e-4 * np.abs(cov).max() ** 0.5)
        assert error < 1e-4
    else:
        assert error > 0.05


def test_avb_with_the_basis_encoder_trains_and_its_contrast_is_exact():
    from tf_asvae.networks import BasisNoiseEncoder

    model = build_model("avb_ac", "synthetic", noise_encoder="basis", noise_basis=3,
                        noise_basis_mlp=(5,), noise_dim=2)
    assert isinstance(model.encoder, BasisNoiseEncoder) and model.encoder.noise_size == 6
    model.compile()
    x = tf.constant(_binary((2, 2, 1), 8))
    before = [w.numpy().copy() for w in model.encoder.trainable_weights]
    logs = model.train_step(x)
    assert np.isfinite(float(logs["loss"]))
    assert all(not np.array_equal(b, w.numpy())
               for b, w in zip(before, model.encoder.trainable_weights)
               if "basis" in w.path)
    with pytest.raises(ValueError, match="noise_encoder='flow'"):
        build_model("avb", "synthetic", noise_encoder="flow")


# ------------------------------------------------------------------ gradient penalty


def test_gradient_penalty_is_half_gamma_squared_input_gradient():
    g = [tf.constant([[3.0, 4.0]]), tf.constant([[[1.0], [2.0]]])]
    np.testing.assert_allclose(objectives.gradient_penalty(g, 2.0), [30.0])
    model = build_model("asvae_r", "synthetic", gradient_penalty=2.0, disc_dropout=0.0)
    model.build_all()
    x = tf.constant(_binary((2, 2, 1), 4))
    z = tf.constant(np.random.default_rng(1).normal(size=(4, 2)).astype("float32"))
    out = model._critic_pair("f1", (x, z), (x, z), True, model._seeds(0))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, z])
        f = model.critics["f1"](tf.concat([x, x], 0), tf.concat([z, z], 0), training=True)
        pos = tf.reduce_sum(f[:4])
    gx, gz = tape.gradient(pos, [x, z])
    expected = objectives.gradient_penalty([gx, gz], 2.0)
    np.testing.assert_allclose(out["penalty"], expected, rtol=1e-4, atol=1e-6)
    plain = build_model("asvae_r", "synthetic")
    plain.build_all()
    assert plain._critic_pair("f1", (x, z), (x, z), True, plain._seeds(0))["penalty"] is None


# ------------------------------------------------------------------ critic forms


def test_quadratic_critic_starts_as_the_mlp_and_can_be_a_gaussian_log_ratio():
    x = tf.constant(images((2, 2, 1), 5))
    z = tf.constant(np.random.default_rng(2).normal(size=(5, 3)).astype("float32"))
    kwargs = dict(x_mlp=(8,), z_mlp=(8,), joint_mlp=(8,), batch_norm=False, dropout=0.0)
    quad = JointDiscriminator(form="quadratic", latent_dim=3, **kwargs)
    mlp = JointDiscriminator(**kwargs)
    quad(x, z)
    mlp(x, z)
    for v, w in zip(mlp.weights, quad.weights):  # created in the same order
        assert v.shape == w.shape
        w.assign(v)
    np.testing.assert_allclose(quad(x, z), mlp(x, z), rtol=1e-6)
    # log N(z; mu, s^2) - log N(z; 0, 1) with per-dimension mu, s (independent of x here):
    mu, s = np.array([0.5, -1.0, 2.0]), np.array([0.3, 0.5, 2.0])
    quad.logit.kernel.assign(tf.zeros_like(quad.logit.kernel))
    quad.logit.bias.assign(tf.zeros_like(quad.logit.bias))
    for dense, value in ((quad.linear_coeff, mu / s ** 2), (quad.square_coeff,
                                                            0.5 - 0.5 / s ** 2)):
        dense.kernel.assign(tf.zeros_like(dense.kernel))
        dense.bias.assign(tf.constant(value, tf.float32))
    quad.x_offset.kernel.assign(tf.zeros_like(quad.x_offset.kernel))
    quad.x_offset.bias.assign([float(-np.sum(mu ** 2 / (2 * s ** 2) + np.log(s)))])
    exact = (dists.posterior(tf.constant(mu, tf.float32), tf.constant(s, tf.float32))
             .log_prob(z) - dists.prior(3).log_prob(z))
    np.testing.assert_allclose(quad(x, z), exact, rtol=1e-5, atol=1e-4)


def test_spectral_norm_divides_the_kernel_by_its_largest_singular_value():
    from tf_asvae.networks.blocks import SpectralNorm
    import keras

    rng = np.random.default_rng(3)
    dense = SpectralNorm(keras.layers.Dense(4, activation="relu"), power_iterations=50)
    x = tf.constant(rng.normal(size=(3, 6)).astype("float32"))
    dense(x)
    w = dense.layer.kernel.numpy()
    sigma = np.linalg.svd(w, compute_uv=False)[0]
    np.testing.assert_allclose(dense(x), np.maximum(x.numpy() @ (w / sigma)
                                                    + dense.layer.bias.numpy(), 0), rtol=1e-4,
                               atol=1e-5)
    conv = SpectralNorm(keras.layers.Conv2D(3, 3, padding="same"), power_iterations=50)
    images_ = tf.constant(rng.normal(size=(2, 5, 5, 2)).astype("float32"))
    conv(images_)
    k = conv.layer.kernel.numpy()
    sigma = np.linalg.svd(k.reshape(-1, 3), compute_uv=False)[0]
    reference = keras.layers.Conv2D(3, 3, padding="same")
    reference(images_)
    reference.kernel.assign(k / sigma)
    reference.bias.assign(conv.layer.bias)
    np.testing.assert_allclose(conv(images_), reference(images_), rtol=1e-4, atol=1e-5)
    critic = JointDiscriminator(x_conv=((4, 3, 2),), spectral_norm=True, z_mlp=(8,),
                                joint_mlp=(8,))
    back = JointDiscriminator.from_config(critic.get_config())
    assert back.spectral_norm and isinstance(back.z_layers[0], SpectralNorm)
    with pytest.raises(ValueError, match="Dense or Conv2D"):
        SpectralNorm(keras.layers.Flatten())


def test_quadratic_critic_needs_the_latent_size():
    with pytest.raises(ValueError, match="latent_dim"):
        JointDiscriminator(form="quadratic")
    with pytest.raises(ValueError, match="form='cubic'"):
        JointDiscriminator(form="cubic")


# ------------------------------------------------------------------ configuration


def test_stabilizers_fill_the_remedies_left_unset():
    paper = ObjectiveConfig(stabilizer="paper")
    for name, value in STABILIZERS["paper"].items():
        assert getattr(paper, name) == value
    mixed = ObjectiveConfig(stabilizer="paper", critic_form="quadratic")
    assert mixed.critic_form == "quadratic" and mixed.critic_offset == "none"
    back = mixed.replace(stabilizer="default")
    assert back.critic_form == STABILIZERS["default"]["critic_form"]
    assert ObjectiveConfig(**{k: v for k, v in mixed.__dict__.items()}) == mixed
    model = build_model("asvae", "mnist", stabilizer="paper", gradient_penalty=1.0)
    objective = model.model_config.objective
    assert (objective.stabilizer, objective.gradient_penalty, objective.generated_x,
            objective.critic_offset) == ("paper", 1.0, "mean", "none")
    again = build_model("asvae", "mnist", **{**model.model_config.objective.__dict__})
    assert again.model_config == model.model_config


def test_default_gradient_penalty_is_r1_on_asvae_critics_and_none_on_avb():
    """The default stabilizer leaves gradient_penalty None in the config, and the models
    read it by kind: R1 with weight 1 on AS-VAE's critics, no penalty on AVB's T."""
    x = tf.constant(_binary((28, 28, 1), 4))
    for kind, expected in (("asvae", 1.0), ("asvae_r", 1.0), ("asvae_g", 1.0),
                           ("avb", 0.0), ("avb_ac", 0.0)):
        model = build_model(kind, "mnist", latent_dim=4)
        objective = model.model_config.objective
        assert objective.gradient_penalty is None
        assert resolve_gradient_penalty(objective, kind) == expected
        critic = next(iter(model.critics))
        model.build_all()
        z = tf.zeros([4, 4])
        out = model._critic_pair(critic, (x, z), (x, z), True, model._seeds(0))
        assert (out["penalty"] is not None) == (expected > 0), kind
    assert resolve_gradient_penalty(ObjectiveConfig(stabilizer="paper"), "asvae") == 0.0
    assert resolve_gradient_penalty(ObjectiveConfig(gradient_penalty=0.0), "asvae") == 0.0
    assert resolve_gradient_penalty(ObjectiveConfig(gradient_penalty=2.0), "avb") == 2.0
    # The synthetic preset keeps the setting its results were measured with.
    synthetic = build_model("asvae", "synthetic").model_config.objective
    assert (synthetic.gradient_penalty, synthetic.recon_z_to_decoder) == (0.0, True)
    assert build_model("asvae", "mnist").model_config.objective.recon_z_to_decoder is False


@pytest.mark.parametrize("items, match", [
    (["critic_form=cubic"], "critic_form='cubic'"),
    (["disc_steps=two"], "disc_steps must be an integer"),
    (["gradient_penalty=-1"], "gradient_penalty=-1.0"),
    (["unknown=1"], "KEY one of"),
    (["critic_form"], "KEY=VALUE"),
    (["stabilizer=heavy"], "stabilizer='heavy'"),
    (["spectral_norm=maybe"], "spectral_norm must be true or false"),
    (["generative_weight=0"], "generative_weight=0.0"),
    (["recon_z_to_decoder=no"], "recon_z_to_decoder must be true or false"),
])
def test_bad_objective_overrides(items, match):
    with pytest.raises(ValueError, match=match):
        ObjectiveConfig(**parse_objective_overrides(items))


def test_network_overrides_are_typed():
    from tf_asvae.config import parse_network_overrides

    assert parse_network_overrides(["batch_norm=false", "disc_dropout=0.1",
                                    "activation=elu", "noise_dim=4"]) == dict(
        batch_norm=False, disc_dropout=0.1, activation="elu", noise_dim=4)
    with pytest.raises(ValueError, match="KEY one of"):
        parse_network_overrides(["encoder_conv=1"])   # tuples are not scalar fields
    with pytest.raises(ValueError, match="batch_norm must be true or false"):
        parse_network_overrides(["batch_norm=no"])


def test_objective_overrides_are_typed():
    assert parse_objective_overrides(["disc_steps=2", "instance_noise=0.1",
                                      "critic_form=quadratic", "spectral_norm=true"]) == dict(
        disc_steps=2, instance_noise=0.1, critic_form="quadratic", spectral_norm=True)
