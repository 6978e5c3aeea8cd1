"""Adversarial Symmetric VAE (Pu et al., NIPS 2017) and its two halves.

Two critics over (x, z) pairs, same architecture, separate weights:

* f_psi1 (eq. 5): positives (x, z), x ~ q(x), z ~ q_phi(z|x); negatives (x, z) with
  x = x_theta(z', xi), z' ~ p(z) and z ~ p(z) drawn *independently* of z'.
  Optimum f1* = log q_phi(x, z) - log p_theta(x) p(z).
* f_psi2 (eq. 6): positives (x, z), z ~ p(z), x = x_theta(z, xi); negatives (x, z) with
  z ~ q_phi(z|x'), x' ~ q(x) and x ~ q(x) *independent* of x' (here: x' is the batch
  partner of x, pairing rows 2k <-> 2k+1, which is the same on any replica split).
  Optimum f2* = log p_theta(x, z) - log q_phi(z) q(x).

Encoder/decoder maximise eq. 11:
  L_VAEx = E_q(x) [log p(x | z_phi(x, eps)) - f_psi1(x, z_phi(x, eps))]      ("r" half)
  L_VAEz = E_p(z) [log q(z | x_theta(z, xi)) - f_psi2(x_theta(z, xi), z)]   ("g" half)
x_theta(z, xi) is continuous and differentiable in theta (ObjectiveConfig.generated_x):
for Bernoulli pixels the decoder's probabilities, the paper's MNIST convention.
log q(z | x_theta) at a prior sample z needs the posterior density at an arbitrary
point: with a planar flow that is the flow's (numerical) inverse.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_asvae import objectives
from tf_asvae.models.base import (SITE_CRITIC, SITE_GEN_X, SITE_POSTERIOR, SITE_PRIOR,
                                  SITE_PRIOR_INDEP, BaseModel)


def batch_partner(batch):
    """Row i -> a different row: 2k <-> 2k+1 (the last row of an odd batch -> its
    predecessor).  Block-local, so it is the same for any split into even shards."""
    idx = tf.range(batch)
    partner = tf.bitwise.bitwise_xor(idx, 1)
    return tf.where(partner >= batch, batch - 2, partner)


class _ASVAEBase(BaseModel):
    use_r = True
    use_g = True

    def _build_critics(self):
        if self.use_r:
            self.critic_x = self._make_critic("f_psi1")
            self.critics["f1"] = self.critic_x
        if self.use_g:
            self.critic_z = self._make_critic("f_psi2")
            self.critics["f2"] = self.critic_z

    def metric_names(self):
        names = ["loss"]
        if self.use_r:
            names += ["d1_loss", "recon_x", "adv_x", "d1_acc", "d1_auc"]
        if self.use_g:
            names += ["d2_loss", "recon_z", "adv_z", "d2_acc", "d2_auc"]
        return tuple(names + ["reconstruction"])

    def _critic_pair(self, name, pos, neg, training, seeds):
        n = tf.shape(pos[0])[0]
        x = tf.concat([pos[0], neg[0]], 0)
        z = tf.concat([pos[1], neg[1]], 0)
        seed = self._dropout_seed(seeds, SITE_CRITIC + list(self.critics).index(name))
        logits = tf.cast(self.critics[name](x, z, training=training, seed=seed, groups=2),
                         tf.float32)
        return logits[:n], logits[n:]

    def _forward(self, x, seeds, training):
        batch = tf.shape(x)[0]
        latent = self.model_config.latent_dim
        z_q, _ = self.sample_posterior(x, seeds, training)
        z_p = self._draw(seeds, SITE_PRIOR, batch, [latent])
        x_p = self._generate_x(
            self._decode_raw(z_p, training, self._dropout_seed(seeds, SITE_PRIOR)), seeds)
        gen_terms, disc_losses, metrics, logits = [], {}, {}, {}
        if self.use_r:
            log_px = self._observation_from_raw(self._decode_raw(
                z_q, training, self._dropout_seed(seeds, SITE_POSTERIOR))).log_prob(x)
            z_indep = self._draw(seeds, SITE_PRIOR_INDEP, batch, [latent])
            f_pos, f_neg = self._critic_pair(
                "f1", (x, z_q), (tf.stop_gradient(x_p), z_indep), training, seeds)
            disc_losses["d1"] = objectives.discriminator_loss(f_pos, f_neg)
            logits["d1"] = (f_pos, f_neg)
            gen_terms.append(objectives.adversarial_likelihood_loss(log_px, f_pos))
            metrics.update(recon_x=-log_px, adv_x=f_pos,
                           d1_acc=objectives.discriminator_accuracy(f_pos, f_neg))
        if self.use_g:
            log_qz = self.posterior(
                x_p, training, self._dropout_seed(seeds, SITE_GEN_X)).log_prob(z_p)
            z_other = tf.stop_gradient(tf.gather(z_q, batch_partner(batch)))
            f_pos, f_neg = self._critic_pair("f2", (x_p, z_p), (x, z_other), training,
                                             seeds)
            disc_losses["d2"] = objectives.discriminator_loss(f_pos, f_neg)
            logits["d2"] = (f_pos, f_neg)
            gen_terms.append(objectives.adversarial_likelihood_loss(log_qz, f_pos))
            metrics.update(recon_z=-log_qz, adv_z=f_pos,
                           d2_acc=objectives.discriminator_accuracy(f_pos, f_neg))
        return {"gen_loss": tf.add_n(gen_terms), "disc_losses": disc_losses,
                "metrics": metrics, "critic_logits": logits}


@keras.saving.register_keras_serializable(package="tf_asvae")
class ASVAE(_ASVAEBase):
    """The full objective of eq. 11 with both critics."""

    kind = "asvae"


@keras.saving.register_keras_serializable(package="tf_asvae")
class ASVAE_R(_ASVAEBase):
    """AS-VAE-r: the first half of eq. 11 (L_VAEx, eq. 8) with f_psi1 only."""

    kind = "asvae_r"
    use_g = False


@keras.saving.register_keras_serializable(package="tf_asvae")
class ASVAE_G(_ASVAEBase):
    """AS-VAE-g: the second half of eq. 11 (L_VAEz, eq. 9) with f_psi2 only."""

    kind = "asvae_g"
    use_r = False
