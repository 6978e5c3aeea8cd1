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
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_asvae import distributions as dists
from tf_asvae import objectives
from tf_asvae.models.base import (SITE_AC, SITE_AC_REF, SITE_CRITIC, SITE_POSTERIOR,
                                  SITE_PRIOR, BaseModel)
from tf_asvae.networks import NoiseEncoder


class _AVBBase(BaseModel):
    explicit_posterior = False
    adaptive_contrast = False

    def _build_encoder(self):
        cfg, net = self.model_config, self.model_config.network
        self.posterior_flow_params = None
        self.made_layers = []
        self.encoder = NoiseEncoder(cfg.latent_dim, net.noise_dim, net.encoder_conv,
                                    net.encoder_mlp, (max(256, 2 * cfg.latent_dim),),
                                    net.batch_norm, net.encoder_dropout, net.activation,
                                    name="encoder")

    def _build_critics(self):
        self.critic_t = self._make_critic("T_psi")
        self.critics["t"] = self.critic_t

    def metric_names(self):
        extra = ("log_r",) if self.adaptive_contrast else ()
        return (("loss", "t_loss", "recon_x", "adv", "t_acc", "t_auc") + extra
                + ("reconstruction",))

    def _critic_pair(self, pos, neg, training, seeds):
        n = tf.shape(pos[0])[0]
        logits = tf.cast(self.critic_t(tf.concat([pos[0], neg[0]], 0),
                                       tf.concat([pos[1], neg[1]], 0), training=training,
                                       seed=self._dropout_seed(seeds, SITE_CRITIC), groups=2),
                         tf.float32)
        return logits[:n], logits[n:]

    def _encode_noise(self, h, seeds, site, batch, lead=(), training=False):
        eps = self._draw(seeds, site, batch, [self.model_config.network.noise_dim], lead=lead)
        return tf.cast(self.encoder.head(h, eps, training=training), tf.float32)

    def sample_posterior(self, x, seed, training=False, site=SITE_POSTERIOR):
        """z = z_phi(x, eps); the black box has no log-density, so None is returned."""
        h = self.encoder.features(x, training=training, seed=self._dropout_seed(seed, site))
        return self._encode_noise(h, seed, site, tf.shape(x)[0], training=training), None

    def _moments(self, h, seeds, batch, training, num_samples=None):
        s = num_samples or self.model_config.objective.ac_num_samples
        zs = self._encode_noise(h, seeds, SITE_AC, batch, lead=(s,), training=training)
        mu = tf.reduce_mean(zs, 0)
        sigma = tf.sqrt(tf.reduce_mean(tf.square(zs - mu), 0) + 1e-6)
        return tf.stop_gradient(mu), tf.stop_gradient(sigma)

    def posterior(self, x, training=False, num_samples=64, seed=0):
        """The moment-matched Gaussian r(z|x) of adaptive contrast, from ``num_samples``
        draws.  A *proposal* for importance sampling, not q(z|x) itself (which has no
        density): evaluation reports say so."""
        h = self.encoder.features(x, training=training)
        mu, sigma = self._moments(h, tf.constant([seed, 3], tf.int64), tf.shape(x)[0],
                                  training, num_samples)
        return dists.posterior(mu, sigma)

    def encode(self, x, seed=0):
        """(Monte-Carlo posterior mean over 64 draws, one sample of z)."""
        x = self._check_images(x)
        seeds = self._stateless_seed(seed, 1)
        h = self.encoder.features(x, training=False)
        mu, _ = self._moments(h, seeds, tf.shape(x)[0], False, 64)
        return mu, self._encode_noise(h, seeds, SITE_POSTERIOR, tf.shape(x)[0])

    def _forward(self, x, seeds, training):
        batch = tf.shape(x)[0]
        latent = self.model_config.latent_dim
        h = self.encoder.features(x, training=training,
                                  seed=self._dropout_seed(seeds, SITE_POSTERIOR))
        z = self._encode_noise(h, seeds, SITE_POSTERIOR, batch, training=training)
        log_px = self._observation_from_raw(self._decode_raw(
            z, training, self._dropout_seed(seeds, SITE_POSTERIOR))).log_prob(x)
        metrics = {"recon_x": -log_px}
        if not self.adaptive_contrast:
            z_p = self._draw(seeds, SITE_PRIOR, batch, [latent])
            t_pos, t_neg = self._critic_pair((x, z), (x, z_p), training, seeds)
            gen = objectives.adversarial_likelihood_loss(log_px, t_pos)
        else:
            mu, sigma = self._moments(h, seeds, batch, training)
            z_tilde = (z - mu) / sigma
            reference = self._draw(seeds, SITE_AC_REF, batch, [latent])
            t_pos, t_neg = self._critic_pair((x, z_tilde), (x, reference), training,
                                              seeds)
            log_r = dists.posterior(mu, sigma).log_prob(z)
            log_pz = self._prior().log_prob(z)
            gen = objectives.adaptive_contrast_loss(log_px, log_pz, log_r, t_pos)
            metrics["log_r"] = log_r
        metrics.update(adv=t_pos, t_acc=objectives.discriminator_accuracy(t_pos, t_neg))
        return {"gen_loss": gen, "disc_losses": {"t": objectives.discriminator_loss(t_pos, t_neg)},
                "metrics": metrics, "critic_logits": {"t": (t_pos, t_neg)}}


@keras.saving.register_keras_serializable(package="tf_asvae")
class AVB(_AVBBase):
    """AVB with T(x, z) contrasting q(z|x) against p(z) (eqs. 3.3, 3.7)."""

    kind = "avb"


@keras.saving.register_keras_serializable(package="tf_asvae")
class AVB_AC(_AVBBase):
    """AVB with adaptive contrast (Sec. 4, eq. 4.2)."""

    kind = "avb_ac"
    adaptive_contrast = True
