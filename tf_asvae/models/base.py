"""The base model: networks, randomness, the training step, public methods.

One ``keras.Model`` owns ``train_step``/``test_step``, the metric trackers and the two
optimizers (encoder/decoder and discriminators).  Each concrete model implements two
hooks:

* ``_build_critics()``: create its discriminators (none for the VAE);
* ``_forward(x, seeds, training)``: per-example tensors of one pass of the game:
  ``{"gen_loss": [B], "disc_losses": {name: [B]}, "metrics": {name: [B]}}``, and for
  models with critics ``"critic_logits": {name: (positive [B], negative [B])}``, from
  which each critic's ROC AUC (``{name}_auc``) is logged.

Training step (``disc_steps = k``): k - 1 discriminator-only updates on fresh samples,
then one joint update in which a single forward pass gives both the discriminators'
loss (differentiated w.r.t. discriminator variables only) and the encoder/decoder loss
(w.r.t. encoder/decoder variables only); both gradients are taken at the same
parameters and applied together (simultaneous updates).  ``discriminator_step`` and
``generator_step`` apply one player's update alone.

Randomness is stateless and *distribution-invariant*: every draw is seeded from
(model seed, optimizer step, call site), drawn for the global batch and sliced to the
replica's rows, so one step on N replicas uses exactly the noise of one step on one
device with the same global batch, and a resumed run continues the same stream.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tf_asvae import distributions as dists
from tf_asvae import flows
from tf_asvae import noise
from tf_asvae import objectives
from tf_asvae.config import ModelConfig, resolve_gradient_penalty
from tf_asvae.networks import Decoder, GaussianEncoder, JointDiscriminator, NoiseEncoder

# Call sites for seeds; each draw in a step uses its own.
(SITE_POSTERIOR, SITE_PRIOR, SITE_PRIOR_INDEP, SITE_GEN_X, SITE_AC, SITE_AC_REF,
 SITE_CRITIC_X, SITE_INSTANCE_NOISE, SITE_PROBE) = range(9)
# Adaptive contrast's moment draws are the same at every step (common random numbers).
AC_FIXED_SEED = (7919, 104729)
# Dropout masks of a network call: fold_in(step seed, SITE_DROPOUT + the call's site);
# critics use SITE_CRITIC + their index.
SITE_DROPOUT, SITE_CRITIC = 100, 50


# The critics' ROC AUC is accumulated over thresholds on an even logit grid (-15 to 15,
# step 0.1) pushed through the sigmoid.  Keras' default of 200 thresholds even in
# probability puts every logit below -5.3 in one bin, and in inference mode the critics'
# logits can all sit there (AS-VAE's f_psi1 on MNIST: means -6.6 and -10.8 for the two
# classes, docs/RESULTS.md), which would read as an AUC of 0.5.
AUC_LOGIT_GRID = np.round(np.arange(-150, 151) * 0.1, 1)


#: The most float32 values a public method returns at once (1 GiB): ``sample(n)``
#: refuses larger ``n`` with a message naming the limit, instead of failing in the
#: allocator (or wrapping around in int32) after the work began.
MAX_OUTPUT_ELEMENTS = 2 ** 28
#: ``sample`` decodes its codes in batches of this many.
SAMPLE_BATCH = 1024


def check_count(value, name, maximum=None, minimum=1):
    """``value`` as a Python int after checking that it is an integer (not a bool, not
    a float) in ``[minimum, maximum]``; ValueError naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}. "
                         f"Received: {name}={value!r} ({type(value).__name__}).")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}. Received: {name}={value}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum} per call (about 1 GiB of output; "
                         f"call repeatedly for more). Received: {name}={value}.")
    return value


def cosine_learning_rate(learning_rate, decay_steps=None, final_fraction=0.0):
    """``learning_rate`` itself when ``decay_steps`` is None, else the schedule
    ``lr(t) = learning_rate * (f + (1 - f) * (1 + cos(pi * min(t, T) / T)) / 2)`` with
    ``T = decay_steps`` and ``f = final_fraction`` (``keras.optimizers.schedules.
    CosineDecay``, which an optimizer's config serializes, so a saved or backed-up model
    resumes on the schedule's curve)."""
    if decay_steps is None:
        return learning_rate
    check_count(decay_steps, "decay_steps")
    if not (isinstance(final_fraction, (int, float)) and not isinstance(final_fraction, bool)
            and 0.0 <= final_fraction <= 1.0):
        raise ValueError(f"final_lr_fraction must be a number in [0, 1]. "
                         f"Received: final_lr_fraction={final_fraction!r}.")
    return keras.optimizers.schedules.CosineDecay(
        float(learning_rate), int(decay_steps), alpha=float(final_fraction))


def _check_not_empty(data, where):
    """ValueError if ``data`` (a tf.data.Dataset, an array or a tensor) has no examples
    for certain; unknown sizes pass."""
    if isinstance(data, tf.data.Dataset):
        if int(data.cardinality()) == 0:
            raise ValueError(f"{where}() received an empty dataset (cardinality 0). "
                             "Received: a tf.data.Dataset with no batches.")
    elif isinstance(data, (np.ndarray, tf.Tensor)) and data.shape and data.shape[0] == 0:
        raise ValueError(f"{where}() received no examples. Received: shape="
                         f"{tuple(data.shape)}.")


def critic_auc(name):
    """A ``keras.metrics.AUC`` for a critic's logits (positives labelled 1): the
    probability that a positive pair scores above a negative one, threshold-free, unlike
    the accuracy at logit 0, which a shift of all logits (batch norm's train/inference
    gap) moves to 0.5 while the critic still separates the classes."""
    # float32 merges the grid's top thresholds (sigmoid(15) rounds near 1): np.unique.
    thresholds = np.unique((1.0 / (1.0 + np.exp(-AUC_LOGIT_GRID))).astype("float32"))
    return keras.metrics.AUC(thresholds=thresholds.tolist(), from_logits=True, name=name)


@keras.saving.register_keras_serializable(package="tf_asvae")
class MeanRatio(keras.metrics.Metric):
    """``sum(numerators) / sum(denominators)`` over the updates: a ratio of means (e.g.
    a critic's mean log-ratio error over the mean absolute exact log-ratio), which is
    not the mean of the per-batch ratios."""

    def __init__(self, name="mean_ratio", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.numerator = self.add_variable(shape=(), initializer="zeros", name="numerator")
        self.denominator = self.add_variable(shape=(), initializer="zeros",
                                             name="denominator")

    def update_state(self, numerator, denominator):
        self.numerator.assign_add(tf.reduce_sum(tf.cast(numerator, self.dtype)))
        self.denominator.assign_add(tf.reduce_sum(tf.cast(denominator, self.dtype)))

    def result(self):
        return tf.math.divide_no_nan(self.numerator, self.denominator)


def _tracker(name):
    if name.endswith("_auc"):
        return critic_auc(name)
    if name.endswith("_rel"):
        return MeanRatio(name=name)
    return keras.metrics.Mean(name=name)


def median_over_last_axis(values):
    """The median over the last axis (the posterior's scale per example: over its latent
    dimensions), as the mean of the two middle values for an even count."""
    sorted_values = tf.sort(values, axis=-1)
    d = values.shape[-1]
    return 0.5 * (sorted_values[..., (d - 1) // 2] + sorted_values[..., d // 2])


def _multi_worker(strategy) -> bool:
    """Whether ``strategy`` is a MultiWorkerMirroredStrategy spanning several workers."""
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and bool(getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)()))


class BaseModel(keras.Model):
    """Base of all tf_asvae models.  Build them with :func:`tf_asvae.build_model`."""

    kind = None
    explicit_posterior = True

    def __init__(self, config, seed=0, **kwargs):
        super().__init__(**kwargs)
        if isinstance(config, dict):
            config = ModelConfig.from_dict(config)
        if not isinstance(config, ModelConfig):
            raise ValueError(f"config must be a ModelConfig or dict. Received: config={config!r}.")
        if self.kind is not None and config.kind != self.kind:
            raise ValueError(f"{type(self).__name__} needs kind={self.kind!r}. "
                             f"Received: kind={config.kind!r}.")
        if (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                or not 0 <= seed < 2 ** 63):
            raise ValueError(f"seed must be an integer in [0, 2**63). Received: seed={seed!r}.")
        seed = int(seed)
        self.model_config = config
        self.seed = seed
        net, fl = config.network, config.flows
        self.decoder = Decoder(config.image_shape, config.likelihood, net.decoder_mlp,
                               net.decoder_start, net.decoder_deconv, net.batch_norm,
                               net.decoder_dropout, net.activation, name="decoder")
        self.decoder_flow_params = None
        if fl.decoder_flow_length:
            self.decoder_flow_params = flows.PlanarFlowParameters(
                fl.decoder_flow_length, config.num_pixels, name="decoder_flow", dtype="float32")
        self._build_encoder()
        self.critics = {}
        self._build_critics()
        self._metric_trackers = {name: _tracker(name) for name in self.metric_names()}
        self.disc_optimizer = None
        self.disc_steps = config.objective.disc_steps

    # ------------------------------------------------------------------ networks
    def _build_encoder(self):
        cfg, net, fl = self.model_config, self.model_config.network, self.model_config.flows
        self.encoder = GaussianEncoder(cfg.latent_dim, net.encoder_conv, net.encoder_mlp,
                                       net.batch_norm, net.encoder_dropout,
                                       cfg.objective.min_scale, net.activation,
                                       name="encoder")
        self.posterior_flow_params = None
        self.made_layers = []
        if fl.posterior_flow == "planar":
            self.posterior_flow_params = flows.PlanarFlowParameters(
                fl.posterior_flow_length, cfg.latent_dim, amortized=fl.posterior_flow_amortized,
                name="posterior_flow", dtype="float32")
        elif fl.posterior_flow == "iaf":
            self.made_layers = [
                flows.MADE(cfg.latent_dim, hidden_units=fl.iaf_hidden_units,
                           context_dim=self._encoder_feature_dim(), name=f"iaf_made_{i}",
                           dtype="float32")
                for i in range(fl.posterior_flow_length)]

    def _encoder_feature_dim(self):
        net = self.model_config.network
        if net.encoder_mlp:
            return net.encoder_mlp[-1]
        h, w, _ = self.model_config.image_shape
        for _, _, s in net.encoder_conv:
            h, w = -(-h // s), -(-w // s)
        c = net.encoder_conv[-1][0] if net.encoder_conv else self.model_config.image_shape[2]
        return h * w * c

    def _build_critics(self):
        pass

    def _make_critic(self, name):
        cfg = self.model_config
        net = cfg.network
        return JointDiscriminator(net.disc_x_conv, net.disc_x_mlp, net.disc_z_mlp,
                                  net.disc_joint_mlp, net.batch_norm, net.disc_dropout,
                                  net.activation, form=cfg.objective.critic_form,
                                  latent_dim=cfg.latent_dim,
                                  spectral_norm=cfg.objective.spectral_norm,
                                  x_pooling=net.disc_x_pooling, name=name)

    @property
    def generator_variables(self):
        """Trainable variables of the encoder, decoder and flows (theta, phi)."""
        critic_ids = {id(v) for c in self.critics.values() for v in c.trainable_variables}
        return [v for v in self.trainable_variables if id(v) not in critic_ids]

    @property
    def discriminator_variables(self):
        return [v for c in self.critics.values() for v in c.trainable_variables]

    # ------------------------------------------------------------------ randomness
    def _seeds(self, step=None):
        """A [2] int seed per (model seed, step); sites are folded in by ``_draw``."""
        if step is None:
            step = self.optimizer.iterations if self.optimizer is not None else 0
        base = tf.constant([self.seed, 0], dtype=tf.int64)
        return tf.random.experimental.stateless_fold_in(base, tf.cast(step, tf.int64))

    def _draw(self, seed, site, local_batch, event_shape, kind="normal", lead=()):
        """Noise of shape lead + [local_batch] + event_shape for this replica's rows,
        drawn for the global batch (see :mod:`tf_asvae.noise`)."""
        s = tf.random.experimental.stateless_fold_in(seed, site)
        return noise.global_draw(s, local_batch, event_shape, kind, lead)

    # ------------------------------------------------------------------ densities
    def _posterior_flow(self, features):
        fl = self.model_config.flows
        if fl.posterior_flow == "planar":
            u, w, b = self.posterior_flow_params(features)
            return flows.planar_flow_chain(u, w, b)
        if fl.posterior_flow == "iaf":
            return flows.iaf_bijector(self.made_layers, context=features)
        return None

    def _decoder_flow(self):
        if self.decoder_flow_params is None:
            return None
        u, w, b = self.decoder_flow_params(None)
        return flows.planar_flow_chain(u, w, b)

    @staticmethod
    def _dropout_seed(seeds, site):
        """The stateless seed of the dropout masks of the network call at ``site``."""
        return tf.random.experimental.stateless_fold_in(seeds, SITE_DROPOUT + site)

    def posterior(self, x, training=False, dropout_seed=None, update_stats=True):
        """q(z|x) as a TFP distribution with batch shape [B] and event [latent_dim]."""
        loc, scale, h = self.encoder(x, training=training, seed=dropout_seed,
                                     update_stats=update_stats)
        loc, scale, h = (tf.cast(t, tf.float32) for t in (loc, scale, h))
        return dists.posterior(loc, scale, self._posterior_flow(h))

    def _sample_q(self, x, seed, training=False, site=SITE_POSTERIOR, update_stats=True):
        """Reparameterised z ~ q(z|x): ``{"z", "log_q", "scale"}`` with log q(z|x) at z
        and the base Gaussian's scale [B, D] (z = flow(loc + scale * eps))."""
        loc, scale, h = self.encoder(x, training=training,
                                     seed=self._dropout_seed(seed, site),
                                     update_stats=update_stats)
        loc, scale, h = (tf.cast(t, tf.float32) for t in (loc, scale, h))
        eps = self._draw(seed, site, tf.shape(x)[0], [self.model_config.latent_dim])
        z0 = loc + scale * eps
        log_q = dists.posterior(loc, scale).log_prob(z0)
        flow = self._posterior_flow(h)
        if flow is not None:
            log_q = log_q - flow.forward_log_det_jacobian(z0, event_ndims=1)
            z0 = flow.forward(z0)
        return {"z": z0, "log_q": log_q, "scale": scale}

    def sample_posterior(self, x, seed, training=False, site=SITE_POSTERIOR,
                         update_stats=True):
        """Reparameterised z ~ q(z|x) and log q(z|x) at it: z = flow(loc + scale * eps)."""
        q = self._sample_q(x, seed, training, site, update_stats)
        return q["z"], q["log_q"]

    def _decode_raw(self, z, training=False, dropout_seed=None, update_stats=True):
        """z [..., B, D] -> raw decoder output [..., B, H, W, C*P] in float32."""
        lead = tf.shape(z)[:-1]
        flat = tf.reshape(z, [-1, self.model_config.latent_dim])
        raw = tf.cast(self.decoder(flat, training=training, seed=dropout_seed,
                                   update_stats=update_stats), tf.float32)
        return tf.reshape(raw, tf.concat([lead, tf.shape(raw)[1:]], 0))

    def observation(self, z, training=False):
        """p(x|z) as a TFP distribution with event shape image_shape."""
        raw = self._decode_raw(z, training)
        return dists.observation(raw, self.model_config.likelihood,
                                 self.model_config.objective.min_scale, self._decoder_flow())

    def discretized_observation(self, z):
        """The 8-bit discretisation of a Gaussian p(x|z) (AS-VAE Sec. 5.1), over integer
        pixels 0..255; for evaluation of natural images in bits/dim."""
        cfg = self.model_config
        if cfg.likelihood != "gaussian" or self.decoder_flow_params is not None:
            raise ValueError(
                "The discretised likelihood needs a Gaussian p(x|z) without a flow. Received: "
                f"likelihood={cfg.likelihood!r}, decoder_flow_length="
                f"{cfg.flows.decoder_flow_length}.")
        return dists.discretized_gaussian(self._decode_raw(z, training=False),
                                          cfg.objective.min_scale)

    def _observation_from_raw(self, raw):
        return dists.observation(raw, self.model_config.likelihood,
                                 self.model_config.objective.min_scale, self._decoder_flow())

    def _generate_x(self, raw, seed, site=SITE_GEN_X):
        """x_theta(z, xi), differentiable in theta (see ObjectiveConfig.generated_x)."""
        cfg = self.model_config
        mode = cfg.objective.generated_x
        if mode == "mean":
            return dists.observation_mean(raw, cfg.likelihood, cfg.objective.min_scale,
                                          self._decoder_flow())
        batch = tf.shape(raw)[0]
        if mode == "straight_through":
            u = self._draw(seed, site, batch, list(raw.shape[1:]), kind="uniform")
            return dists.straight_through_bernoulli(raw, u)
        if mode == "relaxed":
            u = self._draw(seed, site, batch, list(raw.shape[1:]), kind="uniform")
            noise = tf.math.log(u) - tf.math.log1p(-u)
            return tf.sigmoid((raw + noise) / cfg.objective.relaxed_temperature)
        channels = cfg.image_shape[2]
        loc, scale = dists.split_gaussian_params(raw, channels, cfg.objective.min_scale)
        eps = self._draw(seed, site, batch, list(cfg.image_shape))
        x0 = loc + scale * eps
        flow = self._decoder_flow()
        if flow is None:
            return x0
        flat = tf.reshape(x0, [batch, -1])
        return tf.reshape(flow.forward(flat), tf.shape(x0))

    def _critic_x(self, x, seed):
        """The real images as the critics see them: of the generated images' kind.

        With ``generated_x="straight_through"`` the generated images are binary, so real
        ones are drawn as Bernoulli(x) (binary data is unchanged; a grey level is the
        probability of a binary pixel).  Otherwise the images as they are.
        """
        if self.model_config.objective.generated_x != "straight_through":
            return x
        u = self._draw(seed, SITE_CRITIC_X, tf.shape(x)[0], list(x.shape[1:]),
                       kind="uniform")
        return tf.cast(u < x, x.dtype)

    def _instance_noise(self, x, seed):
        """x plus N(0, instance_noise^2) noise (ObjectiveConfig.instance_noise)."""
        std = self.model_config.objective.instance_noise
        if not std:
            return x
        groups = 2
        eps = self._draw(seed, SITE_INSTANCE_NOISE, tf.shape(x)[0] // groups,
                         list(x.shape[1:]), lead=(groups,))
        return x + std * tf.reshape(eps, tf.shape(x))

    def _critic_pair(self, name, pos, neg, training, seeds, offsets=None):
        """Critic ``name`` on positive and negative (x, z) pairs (one call on both).

        Returns ``{"pos", "neg"}``: the logits, network output plus ``offsets`` (the known
        parts of the optimum, ObjectiveConfig.critic_offset; ``None``: 0), and
        ``"penalty"``: the zero-centred gradient penalty per positive pair (or None).
        """
        n = tf.shape(pos[0])[0]
        x = self._instance_noise(tf.concat([pos[0], neg[0]], 0), seeds)
        z = tf.concat([pos[1], neg[1]], 0)
        index = list(self.critics).index(name)
        seed = self._dropout_seed(seeds, SITE_CRITIC + index)
        critic = self.critics[name]
        gamma = resolve_gradient_penalty(self.model_config.objective, self.kind)
        penalty = None
        if gamma and training:
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch([x, z])
                logits = tf.cast(critic(x, z, training=training, seed=seed, groups=2),
                                 tf.float32)
                positives = tf.reduce_sum(logits[:n])
            gx, gz = tape.gradient(positives, [x, z])
            penalty = objectives.gradient_penalty([gx[:n], gz[:n]], gamma)
        else:
            logits = tf.cast(critic(x, z, training=training, seed=seed, groups=2),
                             tf.float32)
        out = {"pos": logits[:n], "neg": logits[n:], "penalty": penalty}
        if offsets is not None:
            out["pos"] = out["pos"] + offsets[0]
            out["neg"] = out["neg"] + offsets[1]
        return out

    def _critic_loss(self, critic_out):
        """The critic's logistic loss per pair, plus its gradient penalty."""
        loss = objectives.discriminator_loss(critic_out["pos"], critic_out["neg"])
        if critic_out["penalty"] is not None:
            loss = loss + critic_out["penalty"]
        return loss

    def _prior(self):
        return dists.prior(self.model_config.latent_dim)

    # ------------------------------------------------------------------ public API
    def _check_images(self, x, where="Images"):
        """``x`` as float32 after checking its rank, shape and dtype (ValueError), and
        that every value is finite and in [0, 1]: eagerly a ValueError, in a graph an
        assertion that runs before any kernel sees the images (InvalidArgumentError)."""
        try:
            x = tf.convert_to_tensor(x)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where} must be a float array or tensor [batch, "
                             f"{', '.join(map(str, self.model_config.image_shape))}] in "
                             f"[0, 1]. Received: {type(x).__name__} ({e}).") from None
        self._check_image_spec(x, where)
        if x.shape[0] == 0:
            raise ValueError(f"{where} must hold at least one image. "
                             f"Received: shape={tuple(x.shape)}.")
        if tf.executing_eagerly():
            values = x.numpy()
            finite = np.isfinite(values)
            if not finite.all():
                raise ValueError(
                    f"{where} must be finite floats in [0, 1]. Received: "
                    f"{int((~finite).sum())} non-finite values (NaN or inf) in "
                    f"{values.size}.")
            lo, hi = float(values.min()), float(values.max())
            if lo < 0.0 or hi > 1.0:
                raise ValueError(
                    f"{where} must lie in [0, 1]. Received: values in [{lo:.4g}, {hi:.4g}].")
            return tf.cast(x, tf.float32)
        return self._assert_image_values(tf.cast(x, tf.float32), where)

    def _check_image_spec(self, x, subject):
        """ValueError naming ``subject`` unless the tensor ``x`` is [batch, H, W, C] of
        the preset's image shape and of a floating dtype (static checks only)."""
        expected = tuple(self.model_config.image_shape)
        if x.shape.rank != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"{subject} must have shape [batch, {', '.join(map(str, expected))}] for "
                f"preset {self.model_config.preset!r}. Received: shape={tuple(x.shape)}.")
        if not x.dtype.is_floating:
            hint = " (divide 8-bit images by 255)" if x.dtype == tf.uint8 else ""
            raise ValueError(f"{subject} must be float in [0, 1]{hint}. "
                             f"Received: dtype={x.dtype.name}.")

    def _assert_image_values(self, x, where):
        """``x`` behind an in-graph check that its values are finite and in [0, 1] (a
        min, a max and an is-finite over the batch).  Under XLA (``jit_compile``)
        assertions compile to nothing."""
        lo, hi = tf.reduce_min(x), tf.reduce_max(x)
        ok = tf.logical_and(tf.reduce_all(tf.math.is_finite(x)),
                            tf.logical_and(lo >= 0.0, hi <= 1.0))
        h, w, c = self.model_config.image_shape
        check = tf.debugging.Assert(
            ok, [f"{where} must be finite floats in [0, 1] (images [batch, {h}, {w}, {c}] "
                 f"for preset {self.model_config.preset!r}). Received values in [min, max] =",
                 lo, hi, "(NaN: a non-finite value)"])
        with tf.control_dependencies([check]):
            return tf.identity(x)

    def _check_codes(self, z):
        latent = self.model_config.latent_dim
        try:
            z = tf.convert_to_tensor(z, tf.float32)
        except (TypeError, ValueError) as e:
            raise ValueError(f"Codes must be floats of shape [batch, {latent}]. "
                             f"Received: {type(z).__name__} ({e}).") from None
        if z.shape.rank != 2 or z.shape[-1] != latent:
            raise ValueError(f"Codes must have shape [batch, {latent}]. "
                             f"Received: shape={tuple(z.shape)}.")
        if tf.executing_eagerly():
            bad = int(np.size(z) - np.isfinite(z.numpy()).sum())
            if bad:
                raise ValueError(f"Codes must be finite. Received: {bad} non-finite values "
                                 f"(NaN or inf) in codes of shape {tuple(z.shape)}.")
            return z
        check = tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(z)),
                                    ["Codes must be finite (no NaN or inf)."])
        with tf.control_dependencies([check]):
            return tf.identity(z)

    def encode(self, x, seed=0):
        """Images -> (posterior mean estimate, a sample of z).

        Gaussian posteriors: the mean is loc pushed through the flow (exact without a
        flow).  AVB's black-box encoder: Monte-Carlo mean over ``ac_num_samples`` draws.
        """
        x = self._check_images(x)
        seed = self._stateless_seed(seed, 1)
        loc, scale, h = self.encoder(x, training=False)
        loc, scale, h = (tf.cast(t, tf.float32) for t in (loc, scale, h))
        z, _ = self.sample_posterior(x, seed)
        flow = self._posterior_flow(h)
        mean = loc if flow is None else flow.forward(loc)
        return mean, z

    def decode(self, z):
        """Codes [B, latent_dim] -> the decoder's mean image [B, H, W, C]."""
        z = self._check_codes(z)
        raw = self._decode_raw(z, training=False)
        cfg = self.model_config
        return dists.observation_mean(raw, cfg.likelihood, cfg.objective.min_scale,
                                      self._decoder_flow())

    def max_images_per_call(self):
        """The most images :meth:`sample` returns at once: ``MAX_OUTPUT_ELEMENTS``
        (2**28 floats, 1 GiB) over the pixels of one image."""
        return max(1, MAX_OUTPUT_ELEMENTS // int(np.prod(self.model_config.image_shape)))

    def sample(self, n, seed=0):
        """n images (decoder means) from z ~ p(z); deterministic for a given seed.
        ``n`` is a Python or NumPy integer in [1, :meth:`max_images_per_call`]; the
        codes are decoded in batches of ``SAMPLE_BATCH``."""
        n = check_count(n, "n", self.max_images_per_call())
        self._stateless_seed(seed, 2)  # checks the seed before any work
        z = self._prior_codes(n, seed)
        if n <= SAMPLE_BATCH:
            return self.decode(z)
        return tf.concat([self.decode(z[i:i + SAMPLE_BATCH])
                          for i in range(0, n, SAMPLE_BATCH)], 0)

    def _prior_codes(self, n, seed):
        """The n codes z ~ p(z) that ``sample(n, seed)`` decodes (graph-safe: ``n`` and
        ``seed`` may be scalar integer tensors)."""
        shape = tf.stack([tf.cast(n, tf.int32), self.model_config.latent_dim])
        return tf.random.stateless_normal(shape, self._stateless_seed(seed, 2))

    @staticmethod
    def _stateless_seed(seed, stream):
        """[seed, stream] as a [2] int64 stateless seed; ``seed`` is a Python int or a
        scalar integer tensor, so the public methods also trace into graphs (export).
        A float, a bool or an integer outside int64 raises ValueError (a float would be
        truncated, a large int wrapped)."""
        if tf.is_tensor(seed):
            if not seed.dtype.is_integer or (seed.shape.rank not in (None, 0)):
                raise ValueError(f"seed must be a scalar integer tensor. Received: dtype="
                                 f"{seed.dtype.name}, shape={tuple(seed.shape)}.")
        elif (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
              or not -2 ** 63 <= seed < 2 ** 63):
            raise ValueError(f"seed must be an integer (int64). Received: seed={seed!r}.")
        return tf.stack([tf.cast(seed, tf.int64), tf.constant(stream, tf.int64)])

    def reconstruct(self, x, seed=0):
        """Images -> decoder mean at the posterior mean code."""
        mean, _ = self.encode(x, seed=seed)
        return self.decode(mean)

    def call(self, x, training=False):
        """Reconstruction with a posterior sample; builds every network."""
        seed = self._seeds(0)
        z, _ = self._posterior_sample_any(x, seed, training)
        raw = self._decode_raw(z, training)
        for critic in self.critics.values():
            critic(x, z, training=training)
        return dists.observation_mean(raw, self.model_config.likelihood,
                                      self.model_config.objective.min_scale,
                                      self._decoder_flow())

    def _posterior_sample_any(self, x, seed, training):
        return self.sample_posterior(x, seed, training)

    def build(self, input_shape=None):
        """Create every variable by one inference pass on a zero batch."""
        x = tf.zeros((2,) + tuple(self.model_config.image_shape))
        self.call(x, training=False)
        self.built = True

    def build_all(self):
        if not self.built:
            self.build()
        return self

    def get_build_config(self):
        return {"image_shape": list(self.model_config.image_shape)}

    def build_from_config(self, config):
        self.build_all()

    # ------------------------------------------------------------------ training
    def compile(self, optimizer=None, disc_optimizer=None, disc_steps=None,
                learning_rate=1e-4, jit_compile=False, decay_steps=None,
                final_lr_fraction=0.0, beta_1=0.9, **kwargs):
        """Paper defaults: Adam(1e-4) for both players (AS-VAE Sec. 5); the critics'
        learning rate is ``learning_rate * ObjectiveConfig.critic_lr_scale``.

        ``optimizer`` updates the encoder/decoder, ``disc_optimizer`` the critics.
        ``decay_steps``: when given (and the optimizers are built here), both learning
        rates follow a cosine decay from their initial values to ``final_lr_fraction``
        times them over ``decay_steps`` training steps, and stay there (SGDR's schedule
        without restarts, Loshchilov & Hutter 2017; :func:`cosine_learning_rate`).
        The critics make ``disc_steps`` updates per step, so their schedule spans
        ``decay_steps * disc_steps`` of their own updates and both players' rates fall
        together.
        ``beta_1``: Adam's first-moment decay for both players (Keras' 0.9 by default;
        AVB's code and DCGAN, Radford et al. 2016, use 0.5, which damps the momentum
        that carries a player past the other's moving optimum).
        Call inside a ``tf.distribute`` strategy scope under a strategy; both optimizers
        are built on their variables here, as MirroredStrategy requires.
        """
        if disc_steps is not None:
            if not isinstance(disc_steps, int) or disc_steps < 1:
                raise ValueError(f"disc_steps must be an integer >= 1. "
                                 f"Received: disc_steps={disc_steps!r}.")
            self.disc_steps = disc_steps
        if decay_steps is not None and (optimizer is not None or disc_optimizer is not None):
            raise ValueError("decay_steps schedules the optimizers compile() builds; give "
                             "your own optimizers their schedules instead. Received: "
                             f"decay_steps={decay_steps!r} with an optimizer.")
        if not (isinstance(beta_1, (int, float)) and not isinstance(beta_1, bool)
                and 0.0 <= beta_1 < 1.0):
            raise ValueError(f"beta_1 must be a number in [0, 1). Received: beta_1={beta_1!r}.")
        scale = self.model_config.objective.critic_lr_scale
        if optimizer is None:
            optimizer = keras.optimizers.Adam(cosine_learning_rate(
                learning_rate, decay_steps, final_lr_fraction), beta_1=beta_1)
        if disc_optimizer is None and self.critics:
            disc_optimizer = keras.optimizers.Adam(cosine_learning_rate(
                learning_rate * scale,
                None if decay_steps is None else decay_steps * self.disc_steps,
                final_lr_fraction), beta_1=beta_1)
        optimizer = keras.optimizers.get(optimizer)
        super().compile(optimizer=optimizer, jit_compile=jit_compile, **kwargs)
        self.disc_optimizer = keras.optimizers.get(disc_optimizer) if disc_optimizer else None
        if (self.disc_optimizer is not None and self.dtype_policy.name == "mixed_float16"
                and not isinstance(self.disc_optimizer, keras.optimizers.LossScaleOptimizer)):
            # As super().compile() does for `optimizer`: float16 gradients need scaling.
            self.disc_optimizer = keras.optimizers.LossScaleOptimizer(self.disc_optimizer)
        self.build_all()
        self.optimizer.build(self.generator_variables)
        if self.disc_optimizer is not None:
            self.disc_optimizer.build(self.discriminator_variables)

    def get_compile_config(self):
        if not self.compiled:
            return None
        return {
            "optimizer": keras.optimizers.serialize(self.optimizer),
            "disc_optimizer": (keras.optimizers.serialize(self.disc_optimizer)
                               if self.disc_optimizer is not None else None),
            "disc_steps": self.disc_steps,
            "jit_compile": bool(self.jit_compile),
        }

    def compile_from_config(self, config):
        config = dict(config)
        opt = keras.optimizers.deserialize(config.pop("optimizer"))
        dopt = config.pop("disc_optimizer", None)
        dopt = keras.optimizers.deserialize(dopt) if dopt else None
        self.compile(optimizer=opt, disc_optimizer=dopt, **config)

    def metric_names(self):
        """Names of the logged metrics (trackers are created in __init__)."""
        raise NotImplementedError

    @property
    def metrics(self):
        return list(self._metric_trackers.values())

    def _log_metrics(self, values):
        logs = {}
        for name, value in values.items():
            tracker = self._metric_trackers[name]
            if isinstance(tracker, keras.metrics.AUC):
                positive, negative = value
                tracker.update_state(
                    tf.concat([tf.ones_like(positive), tf.zeros_like(negative)], 0),
                    tf.concat([positive, negative], 0))
            elif isinstance(tracker, MeanRatio):
                tracker.update_state(*value)
            else:
                tracker.update_state(tf.reduce_mean(tf.cast(value, tf.float32)))
            logs[name] = tracker.result()
        if _multi_worker(self.distribute_strategy):
            # Keras 3 reduces the logs of a multi-worker step with
            # strategy.reduce("MEAN", v, axis=0), which fails on scalars ("Invalid
            # reduction dimension 0 for input with 0 dimensions", tensorflow/tensorflow
            # #72388).  Shape [1] reduces to the same scalar (the workers' values agree).
            logs = {name: tf.reshape(value, [1]) for name, value in logs.items()}
        return logs

    def _images(self, data):
        if isinstance(data, (tuple, list)):
            data = data[0]
        if isinstance(data, dict):
            data = data["image"]
        return tf.cast(data, tf.float32)

    @classmethod
    def minimum_batch_size(cls):
        """The smallest batch (per replica) the objective can use: 2 for models whose
        f_psi2 pairs each example with a batch partner (AS-VAE, AS-VAE-g), else 1."""
        return 2 if getattr(cls, "use_g", False) else 1

    def _step_images(self, data, where):
        """The images of a training or test batch, checked where they enter the step:
        rank, shape and dtype when the step is traced (ValueError before any step
        runs), values in the graph (a min, a max and an is-finite per batch;
        InvalidArgumentError naming the range, raised before any weight changes)."""
        if isinstance(data, (tuple, list)):
            data = data[0]
        if isinstance(data, dict):
            if "image" not in data:
                raise ValueError(f"{where}: a dict batch needs an 'image' entry. "
                                 f"Received keys: {sorted(data)}.")
            data = data["image"]
        x = tf.convert_to_tensor(data)
        self._check_image_spec(x, f"{where}: images")
        need = self.minimum_batch_size()
        if x.shape[0] is not None and x.shape[0] < need:
            raise ValueError(
                f"{where}: {type(self).__name__} needs batches of at least {need} examples "
                f"per replica (f_psi2 pairs each example with a batch partner). Received: "
                f"batch of {x.shape[0]}.")
        x = self._assert_image_values(tf.cast(x, tf.float32), where)
        if need > 1 and x.shape[0] is None:
            check = tf.debugging.Assert(
                tf.shape(x)[0] >= need,
                [f"{where}: {type(self).__name__} needs batches of at least {need} examples "
                 "per replica (batch partner of f_psi2). Received a batch of", tf.shape(x)[0]])
            with tf.control_dependencies([check]):
                x = tf.identity(x)
        return x

    def fit(self, x=None, *args, **kwargs):
        """``keras.Model.fit`` after refusing data with no examples (an empty dataset
        would otherwise train nothing and return an empty history)."""
        _check_not_empty(x, "fit")
        return super().fit(x, *args, **kwargs)

    def _reduced_losses(self, out):
        gen = objectives.reduce_loss(out["gen_loss"])
        disc = sum(objectives.reduce_loss(v) for v in out["disc_losses"].values()) \
            if out["disc_losses"] else None
        # Loss scaling (a no-op unless an optimizer is a mixed_float16 LossScaleOptimizer,
        # which unscales the gradients it receives).
        if self.optimizer is not None:
            gen = self.optimizer.scale_loss(gen)
        if disc is not None and self.disc_optimizer is not None:
            disc = self.disc_optimizer.scale_loss(disc)
        return gen, disc

    def _apply_update(self, optimizer, loss, tape, variables):
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables))

    def discriminator_step(self, x, step=None):
        """One update of the discriminators alone, on fresh samples."""
        if not self.critics:
            return {}
        with tf.GradientTape() as tape:
            out = self._forward(x, self._seeds(step), training=True)
            _, disc = self._reduced_losses(out)
        self._apply_update(self.disc_optimizer, disc, tape, self.discriminator_variables)
        return out

    def generator_step(self, x, step=None):
        """One update of the encoder/decoder alone."""
        with tf.GradientTape() as tape:
            out = self._forward(x, self._seeds(step), training=True)
            gen, _ = self._reduced_losses(out)
        self._apply_update(self.optimizer, gen, tape, self.generator_variables)
        return out

    def train_step(self, data):
        x = self._step_images(data, "train_step")
        step = self.optimizer.iterations
        for k in range(self.disc_steps - 1):
            # Extra critic updates: distinct seeds per inner step.
            self.discriminator_step(x, step=step * 1000 + 1 + k)
        with tf.GradientTape(persistent=True) as tape:
            out = self._forward(x, self._seeds(step), training=True)
            gen, disc = self._reduced_losses(out)
        if disc is not None:
            self._apply_update(self.disc_optimizer, disc, tape, self.discriminator_variables)
        self._apply_update(self.optimizer, gen, tape, self.generator_variables)
        del tape
        return self._log_metrics(self._metric_values(out))

    def test_step(self, data):
        x = self._step_images(data, "test_step")
        seeds = self._seeds(0)
        out = self._forward(x, seeds, training=False)
        values = self._metric_values(out)
        values.update(self._diagnostics(x, seeds))
        return self._log_metrics(values)

    @staticmethod
    def _batch_seeds(seed, index):
        """The noise seeds of batch ``index`` of :meth:`diagnose` (and of
        :meth:`recalibrate_batch_norm`'s one batch, so that the two see the same codes)."""
        return tf.random.experimental.stateless_fold_in(tf.constant([seed, 5], tf.int64),
                                                        index)

    # ------------------------------------------------------------------ batch norm
    def recalibrate_batch_norm(self, images, seed=0):
        """Sets every batch norm layer's moving statistics to the statistics of
        ``images`` (training images, e.g. 1000) at the current weights.

        Keras' moving averages (momentum 0.99) trail the weights by ~100 steps; while the
        weights move fast (learning rate 1e-3, an adversarial game) the lag alone opened
        gaps of 70-680 nats between the reconstruction term in training and in inference
        mode on MNIST (docs/RESULTS.md).  One training-mode pass of the model's forward
        function over ``images`` with momentum 0 replaces them by the population
        statistics of the same paths the training step uses: the encoder on the images,
        the decoder on their posterior codes, each critic on its pairs (the generated
        paths update nothing, see ``SyncBatchNormalization.call``).  No weight changes.
        ``tf_asvae.callbacks.RecalibrateBatchNorm`` does it before each validation.
        Returns the number of layers recalibrated.
        """
        layers = [layer for layer in self._flatten_layers()
                  if isinstance(layer, keras.layers.BatchNormalization)]
        if not layers:
            return 0
        x = self._images(tf.convert_to_tensor(images))
        saved = [layer.momentum for layer in layers]
        try:
            for layer in layers:
                layer.momentum = 0.0
            self._forward(x, self._batch_seeds(seed, 0), training=True)
        finally:
            for layer, momentum in zip(layers, saved):
                layer.momentum = momentum
        return len(layers)

    # ------------------------------------------------------------------ diagnostics
    def diagnostic_names(self):
        """Names of the game's health diagnostics logged by ``test_step`` (``val_`` in
        training logs) and by :meth:`diagnose`; in the training logs the cheap ones
        (``kl_exact``, ``posterior_scale``) come from every step, the others from
        :class:`tf_asvae.callbacks.GameDiagnostics`.

        * ``kl_exact``: E[log q(z|x) - log p(z)] at z ~ q(z|x) (explicit q only), beside
          what a critic or the objective uses in its place (``adv_x``, ``adv``);
        * ``posterior_scale``: the median over latent dimensions of q(z|x)'s standard
          deviation (a posterior collapsed to a point sits at ``min_scale``);
        * ``recon_gap``: E[-log p(x|z)] in inference mode minus in training mode, same
          images and noise (batch norm's moving statistics against batch statistics);
        * ``d1_ratio_error``, ``d1_ratio_scale``, ``d1_ratio_rel`` (AS-VAE's f_psi1):
          the mean absolute error of the critic's z-contrast in nats, the mean absolute
          exact contrast, and their ratio (see :func:`objectives.log_ratio_error`).
        """
        return ()

    def _critic_diagnostics(self, x, seeds):
        """Per-example critic diagnostics (inference mode); none by default."""
        return {}

    def _recon_gap(self, x, seeds):
        """E[-log p(x|z)] in inference mode minus in training mode (batch statistics,
        moving statistics untouched), with the same noise, per example."""
        nll = []
        for training in (False, True):
            z, _ = self.sample_posterior(x, seeds, training=training, update_stats=False)
            raw = self._decode_raw(z, training, self._dropout_seed(seeds, SITE_POSTERIOR),
                                   update_stats=False)
            nll.append(-self._observation_from_raw(raw).log_prob(x))
        return nll[0] - nll[1]

    def _diagnostics(self, x, seeds):
        out = dict(self._critic_diagnostics(x, seeds))
        if "recon_gap" in self.diagnostic_names():
            out["recon_gap"] = self._recon_gap(x, seeds)
        return out

    def diagnose(self, data, max_batches=None, seed=0):
        """The diagnostics (and test-step metrics) of the model on ``data`` in inference
        mode, without touching the logged metrics: a dict of means over the examples
        (``*_rel``: ratios of means).  ``data``: an array or tensor of images [N, H, W, C]
        (batches of 100) or a ``tf.data.Dataset`` of batches."""
        if isinstance(data, tf.data.Dataset):
            batches = data
        else:
            batches = tf.data.Dataset.from_tensor_slices(
                tf.convert_to_tensor(data, tf.float32)).batch(100)
        if max_batches is not None:
            batches = batches.take(max_batches)
        if getattr(self, "_diagnose_fn", None) is None:
            def step(x, seeds):
                out = self._forward(x, seeds, training=False)
                values = self._metric_values(out)
                values.update(self._diagnostics(x, seeds))
                sums = {}
                for name, value in values.items():
                    if name.endswith("_auc"):
                        continue
                    if name.endswith("_rel"):
                        sums[name] = tf.stack([tf.reduce_sum(value[0]),
                                               tf.reduce_sum(value[1])])
                    else:
                        sums[name] = tf.reduce_sum(tf.cast(value, tf.float32)
                                                   * tf.ones([tf.shape(x)[0]]))
                return sums
            self._diagnose_fn = tf.function(step)
        totals, count = {}, 0
        for i, batch in enumerate(batches):
            x = self._images(batch)
            sums = self._diagnose_fn(x, self._batch_seeds(seed, i))
            for name, value in sums.items():
                totals[name] = totals.get(name, 0.0) + value.numpy()
            count += int(x.shape[0])
        if not count:
            raise ValueError("diagnose() received no examples.")
        return {name: (float(v[0] / v[1]) if v[1] else 0.0) if name.endswith("_rel")
                else float(v / count) for name, v in totals.items()}

    def _metric_values(self, out):
        values = {"loss": out["gen_loss"]}
        values.update({f"{k}_loss": v for k, v in out["disc_losses"].items()})
        values.update(out["metrics"])
        values.update({f"{k}_auc": v for k, v in out.get("critic_logits", {}).items()})
        recon = [values[k] for k in ("recon_x", "recon_z") if k in values]
        values["reconstruction"] = tf.add_n(recon) / float(len(recon))
        return values

    def _forward(self, x, seeds, training):
        raise NotImplementedError

    # ------------------------------------------------------------------ serialization
    def get_config(self):
        return {"config": self.model_config.to_dict(), "seed": self.seed, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
