"""Adversarial Variational Bayes (Mescheder et al., ICML 2017).

Black-box encoder z = z_phi(x, eps) with the noise as an input, so q(z|x) has no density.
Critic T_psi(x, z) (eq. 3.3): positives x ~ q(x), z ~ q_phi(z|x); negatives x ~ q(x),
z ~ p(z); optimum T* = log q_phi(z|x) - log p(z) (Prop. 1).  Encoder/decoder maximise
eq. 3.7: E[-T(x, z_phi(x, eps)) + log p_theta(x | z_phi(x, eps))]; the gradient through
T*'s explicit phi-dependence vanishes (Prop. 2), so T is held fixed in that step.

Adaptive contrast (Sec. 4, eq. 4.2): r(z|x) = N(mu(x), diag sigma(x)^2) with the mean and
standard deviation of q(z|x) estimated from ``ac_num_samples`` noise draws.  T contrasts
z~ = (z - mu) / sigma against N(0, I) and the encoder/decoder maximise
E[-T(x, z~) - log r(z|x) + log p(x|z) + log p(z)].  mu and sigma are held fixed
(stop-gradient) inside a step: the decomposition log q - log p = (log q - log r) +
(log r - log p) holds for any fixed r, so this keeps the objective an ELBO estimate.

With ``ObjectiveConfig.ac_covariance="full"``, r has the full sample covariance of the
draws, r = N(mu, L L^T), and z~ = L^-1 (z - mu).  A diagonal r leaves every correlation
of q to the critic: on binarized MNIST (32-d) the encoder learned a q(z|x) whose
whitened covariance had eigenvalues from 1e-4 to 4.5 (nearly degenerate) while each
unit's spread looked like the prior's; the saturated critic read 10.6 nats where the
true KL(q || r) is far larger, so the ELBO estimate (-87.8) and the importance-sampled
likelihood (-188) disagreed by 100 nats (docs/RESULTS.md).  With a full r, log r holds
q's entropy up to its non-Gaussian part, and only that is left to the critic.

The moment draws are the same noise vectors at every step and for every example
(common random numbers), so r(z|x) is a deterministic function of x.  With fresh draws
each step, r would carry sampling noise the critic cannot see (it sees x and z~ only):
it would then estimate the KL of the noise-averaged q(z~|x), which by convexity is
smaller than the average KL, and the reported ELBO would be biased upward (about 0.13
nats per latent dimension with 8 fresh draws for a Gaussian q).

Fixed draws still carry their own sampling error: r takes the draws' sample mean and
covariance, not the noise's, so even a Gaussian q is whitened to a z~ that is not
N(0, I) (64 plain draws of 32 noise units: KL 12.6 nats for a code linear in the
noise), and T must learn that mismatch besides q's real departure from a Gaussian.
With ``ObjectiveConfig.ac_draws="matched"`` the draws are antithetic and whitened to
N(0, I)'s moments exactly (:func:`tf_asvae.distributions.matched_normal_draws`), so the
mismatch vanishes for every code linear in the noise.

Critic offsets (ObjectiveConfig.critic_offset): ``"prior"`` adds the known ``-log p(z)``
to T (the official AVB code, LMescheder/AdversarialVariationalBayes#4), so that the
network learns log q(z|x); with adaptive contrast it adds ``-log N(z~; 0, I)``.
``"explicit"`` (the default stabilizer's, meant for AS-VAE's explicit q) adds nothing
here: q(z|x) has no density, and with adaptive contrast r matches q's moments, so the
known part of T* = log q(z~|x) - log N(z~) is 0.  On the synthetic 2x2 images (AVB
Table 1 setting) T with the prior's term drifted late in training (exact log p(x)
-1.585 after 4000 steps) where T alone reached -1.404 (docs/RESULTS.md).
"""

from __future__ import annotations

import functools

import keras
import tensorflow as tf

from tf_asvae import distributions as dists
from tf_asvae import objectives
from tf_asvae.models.base import (AC_FIXED_SEED, SITE_AC_REF, SITE_POSTERIOR, SITE_PRIOR,
                                  BaseModel, median_over_last_axis)
from tf_asvae.networks import BasisNoiseEncoder, NoiseEncoder


@functools.lru_cache(maxsize=16)
def _matched_draws(num, num_blocks, block):
    """Adaptive contrast's fixed draws with N(0, I)'s moments (``ac_draws="matched"``)."""
    return dists.matched_normal_draws(num, num_blocks, block, AC_FIXED_SEED)


class _AVBBase(BaseModel):
    explicit_posterior = False
    adaptive_contrast = False

    def _build_encoder(self):
        cfg, net = self.model_config, self.model_config.network
        self.posterior_flow_params = None
        self.made_layers = []
        if net.noise_encoder == "basis":
            self.encoder = BasisNoiseEncoder(
                cfg.latent_dim, net.noise_dim, net.noise_basis, net.encoder_conv,
                net.encoder_mlp, net.noise_basis_mlp, net.batch_norm, net.encoder_dropout,
                net.activation, name="encoder")
        else:
            self.encoder = NoiseEncoder(cfg.latent_dim, net.noise_dim, net.encoder_conv,
                                        net.encoder_mlp, (max(256, 2 * cfg.latent_dim),),
                                        net.batch_norm, net.encoder_dropout,
                                        net.activation, name="encoder")

    def _build_critics(self):
        self.critic_t = self._make_critic("T_psi")
        self.critics["t"] = self.critic_t

    def metric_names(self):
        extra = ("log_r",) if self.adaptive_contrast else ()
        return (("loss", "t_loss", "recon_x", "adv", "t_acc", "t_auc") + extra
                + ("reconstruction",) + self.diagnostic_names())

    def diagnostic_names(self):
        return ("posterior_scale", "recon_gap")

    def _encode_noise(self, h, seeds, site, batch, lead=(), training=False):
        eps = self._draw(seeds, site, batch, [self.encoder.noise_size], lead=lead)
        return tf.cast(self.encoder.head(h, eps, training=training), tf.float32)

    def sample_posterior(self, x, seed, training=False, site=SITE_POSTERIOR,
                         update_stats=True):
        """z = z_phi(x, eps); the black box has no log-density, so None is returned."""
        h = self.encoder.features(x, training=training, seed=self._dropout_seed(seed, site),
                                  update_stats=update_stats)
        return self._encode_noise(h, seed, site, tf.shape(x)[0], training=training), None

    def _contrast(self, h, num_samples=None):
        """r(z|x): the Gaussian with the mean and covariance (diagonal, or full with
        ``ac_covariance="full"``) of q(z|x) estimated from ``num_samples`` noise draws,
        the same draws for every example and step (common random numbers), held fixed
        in the gradient.  The "mlp" encoder's moments are those of its codes for the
        draws; the "basis" encoder's are exact given its basis vectors' moments."""
        objective = self.model_config.objective
        s = num_samples or objective.ac_num_samples
        if objective.ac_draws == "matched":
            eps = tf.constant(_matched_draws(int(s), *self.encoder.noise_blocks))
        else:
            eps = tf.random.stateless_normal([s, self.encoder.noise_size],
                                             tf.constant(AC_FIXED_SEED, tf.int64))
        mean, second = self.encoder.moments(h, eps, objective.ac_covariance)
        return dists.gaussian_from_moments(tf.stop_gradient(tf.cast(mean, tf.float32)),
                                           tf.stop_gradient(tf.cast(second, tf.float32)),
                                           objective.ac_covariance)

    @staticmethod
    def _marginal_scale(r):
        """The standard deviation of each latent unit under r, [B, D]."""
        return tf.sqrt(tf.linalg.diag_part(r.covariance()))

    def posterior(self, x, training=False, num_samples=None, seed=0, update_stats=True):
        """The moment-matched Gaussian r(z|x) of adaptive contrast, from ``num_samples``
        draws (default ``ac_num_samples``).  A *proposal* for importance sampling, not
        q(z|x) itself (which has no density): evaluation reports say so.  ``seed`` is
        kept for compatibility: the draws are fixed (common random numbers)."""
        h = self.encoder.features(x, training=training, update_stats=update_stats)
        return self._contrast(h, num_samples)

    def encode(self, x, seed=0):
        """(Monte-Carlo posterior mean over ``ac_num_samples`` draws, one sample of z)."""
        x = self._check_images(x)
        seeds = self._stateless_seed(seed, 1)
        h = self.encoder.features(x, training=False)
        return (self._contrast(h).mean(),
                self._encode_noise(h, seeds, SITE_POSTERIOR, tf.shape(x)[0]))

    def _t_offsets(self, z_pos, z_neg):
        """The known part of T's optimum added to its output (see the module docstring)."""
        # Only "prior" adds anything: q(z|x) has no density, so T's "explicit" part is
        # empty (with the prior's term alone AVB drifted on the synthetic images:
        # log p(x) -1.585 against -1.404 without it, docs/RESULTS.md).
        if self.model_config.objective.critic_offset != "prior":
            return None
        prior = self._prior()
        return (-prior.log_prob(z_pos), -prior.log_prob(z_neg))

    def _forward(self, x, seeds, training):
        batch = tf.shape(x)[0]
        latent = self.model_config.latent_dim
        h = self.encoder.features(x, training=training,
                                  seed=self._dropout_seed(seeds, SITE_POSTERIOR))
        z = self._encode_noise(h, seeds, SITE_POSTERIOR, batch, training=training)
        log_px = self._observation_from_raw(self._decode_raw(
            z, training, self._dropout_seed(seeds, SITE_POSTERIOR))).log_prob(x)
        metrics = {"recon_x": -log_px}
        x_c = self._critic_x(x, seeds)
        if not self.adaptive_contrast:
            z_p = self._draw(seeds, SITE_PRIOR, batch, [latent])
            t = self._critic_pair("t", (x_c, z), (x_c, z_p), training, seeds,
                                  self._t_offsets(z, z_p))
            gen = objectives.adversarial_likelihood_loss(log_px, t["pos"])
        else:
            r = self._contrast(h)
            z_tilde = r.bijector.inverse(z)
            reference = self._draw(seeds, SITE_AC_REF, batch, [latent])
            t = self._critic_pair("t", (x_c, z_tilde), (x_c, reference), training, seeds,
                                  self._t_offsets(z_tilde, reference))
            log_r = r.log_prob(z)
            log_pz = self._prior().log_prob(z)
            gen = objectives.adaptive_contrast_loss(log_px, log_pz, log_r, t["pos"])
            metrics["log_r"] = log_r
        metrics.update(adv=t["pos"], t_acc=objectives.discriminator_accuracy(t["pos"],
                                                                          t["neg"]))
        return {"gen_loss": gen, "disc_losses": {"t": self._critic_loss(t)},
                "metrics": metrics, "critic_logits": {"t": (t["pos"], t["neg"])}}

    def _critic_diagnostics(self, x, seeds):
        """The posterior's scale from the moments of q(z|x) (inference mode).  T's
        optimum log q(z|x) - log p(z) has no closed form: q is a black box."""
        h = self.encoder.features(x, training=False)
        scale = self._marginal_scale(self._contrast(h))
        return {"posterior_scale": median_over_last_axis(scale)}


@keras.saving.register_keras_serializable(package="tf_asvae")
class AVB(_AVBBase):
    """AVB with T(x, z) contrasting q(z|x) against p(z) (eqs. 3.3, 3.7)."""

    kind = "avb"


@keras.saving.register_keras_serializable(package="tf_asvae")
class AVB_AC(_AVBBase):
    """AVB with adaptive contrast (Sec. 4, eq. 4.2)."""

    kind = "avb_ac"
    adaptive_contrast = True
