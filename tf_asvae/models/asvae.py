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
ObjectiveConfig.generative_weight multiplies L_VAEz (the paper: 1) and
ObjectiveConfig.recon_z_to_decoder=False keeps log q(z | x_theta) out of the decoder's
gradient (the paper: in it).
x_theta(z, xi) is differentiable in theta (ObjectiveConfig.generated_x): for Bernoulli
pixels by default a binary sample with the straight-through gradient, so that the
critics see binary images on both sides of every pair.
log q(z | x_theta) at a prior sample z needs the posterior density at an arbitrary
point: with a planar flow that is the flow's (numerical) inverse.

Critic offsets (ObjectiveConfig.critic_offset for f_psi1, generative_critic_offset for
f_psi2): the logit of each critic is its network's output plus the closed-form part of
its optimum,

  ``"prior"``:    f_psi1 = net1 - log p(z),                 f_psi2 = net2 + log p(z);
  ``"explicit"``: f_psi1 = net1 + log q(z|x) - log p(z),    f_psi2 = net2 + log p(x|z) + log p(z),

so that net1 learns log q(x) - log p_theta(x) and net2 -log q_phi(z) - log q(x).  The
same logit enters the encoder/decoder objective, with the offset differentiated like any
other term: with ``"explicit"``, L_VAEx is the ELBO minus net1, and L_VAEz is
E[log q(z|x~) - log p(x~|z) - log p(z)] minus net2.

Batch norm: the networks' data paths (the encoder on real images, the decoder on
posterior codes) update the moving statistics; the generated paths (the decoder on prior
codes, the encoder on x_theta(z)) normalise with their own batch statistics in training
and leave the moving ones alone, so that inference mode describes the data path.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_asvae import objectives
from tf_asvae.models.base import (SITE_GEN_X, SITE_POSTERIOR, SITE_PRIOR, SITE_PRIOR_INDEP,
                                  SITE_PROBE, BaseModel, median_over_last_axis)


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
        return tuple(names + ["reconstruction"] + list(self.diagnostic_names()))

    def diagnostic_names(self):
        names = ["kl_exact", "posterior_scale", "recon_gap"]
        if self.use_r:
            names += ["d1_ratio_error", "d1_ratio_scale", "d1_ratio_rel"]
        return tuple(names)

    def _offset(self):
        return self.model_config.objective.critic_offset

    def _forward(self, x, seeds, training):
        batch = tf.shape(x)[0]
        latent = self.model_config.latent_dim
        prior = self._prior()
        q = self._sample_q(x, seeds, training)                     # data path
        z_q, log_q = q["z"], q["log_q"]
        raw_q = self._decode_raw(z_q, training, self._dropout_seed(seeds, SITE_POSTERIOR))
        z_p = self._draw(seeds, SITE_PRIOR, batch, [latent])
        raw_p = self._decode_raw(z_p, training, self._dropout_seed(seeds, SITE_PRIOR),
                                 update_stats=False)                # generated path
        x_p = self._generate_x(raw_p, seeds)
        x_c = self._critic_x(x, seeds)
        log_pz_q = prior.log_prob(z_q)
        metrics = {"kl_exact": log_q - log_pz_q,
                   "posterior_scale": median_over_last_axis(q["scale"])}
        need_q_at_xp = self.use_g or (self.use_r and self._offset() == "explicit")
        objective = self.model_config.objective
        x_p_encoded = x_p if objective.recon_z_to_decoder else tf.stop_gradient(x_p)
        q_xp = (self.posterior(x_p_encoded, training,
                               self._dropout_seed(seeds, SITE_GEN_X), update_stats=False)
                if need_q_at_xp else None)
        gen_terms, disc_losses, logits = [], {}, {}
        if self.use_r:
            log_px = self._observation_from_raw(raw_q).log_prob(x)
            z_indep = self._draw(seeds, SITE_PRIOR_INDEP, batch, [latent])
            offsets = None
            if self._offset() == "prior":
                offsets = (-log_pz_q, -prior.log_prob(z_indep))
            elif self._offset() == "explicit":
                off_neg = tf.stop_gradient(q_xp.log_prob(z_indep) - prior.log_prob(z_indep))
                offsets = (log_q - log_pz_q, off_neg)
            f1 = self._critic_pair("f1", (x_c, z_q), (tf.stop_gradient(x_p), z_indep),
                                   training, seeds, offsets)
            disc_losses["d1"] = self._critic_loss(f1)
            logits["d1"] = (f1["pos"], f1["neg"])
            gen_terms.append(objectives.adversarial_likelihood_loss(log_px, f1["pos"]))
            metrics.update(recon_x=-log_px, adv_x=f1["pos"],
                           d1_acc=objectives.discriminator_accuracy(f1["pos"], f1["neg"]))
        if self.use_g:
            log_qz = q_xp.log_prob(z_p)
            partner = batch_partner(batch)
            z_other = tf.stop_gradient(tf.gather(z_q, partner))
            offsets = None
            g_offset = objective.generative_critic_offset
            if g_offset == "prior":
                offsets = (prior.log_prob(z_p), prior.log_prob(z_other))
            elif g_offset == "explicit":
                log_p_xp = self._observation_from_raw(raw_p).log_prob(x_p)
                log_p_other = self._observation_from_raw(
                    tf.gather(raw_q, partner)).log_prob(x_c)
                offsets = (log_p_xp + prior.log_prob(z_p),
                           tf.stop_gradient(log_p_other + prior.log_prob(z_other)))
            f2 = self._critic_pair("f2", (x_p, z_p), (x_c, z_other), training, seeds,
                                   offsets)
            disc_losses["d2"] = self._critic_loss(f2)
            logits["d2"] = (f2["pos"], f2["neg"])
            gen_terms.append(objective.generative_weight *
                             objectives.adversarial_likelihood_loss(log_qz, f2["pos"]))
            metrics.update(recon_z=-log_qz, adv_z=f2["pos"],
                           d2_acc=objectives.discriminator_accuracy(f2["pos"], f2["neg"]))
        return {"gen_loss": tf.add_n(gen_terms), "disc_losses": disc_losses,
                "metrics": metrics, "critic_logits": logits}

    def _critic_diagnostics(self, x, seeds):
        """f_psi1's log-ratio error (inference mode): for z ~ q(z|x) and z' ~ p(z), the
        critic's contrast f1(x, z) - f1(x, z') against the exact
        [log q(z|x) - log p(z)] - [log q(z'|x) - log p(z')] (../shared/MATH.md, Sec. 5)."""
        if not self.use_r:
            return {}
        batch = tf.shape(x)[0]
        prior = self._prior()
        q = self._sample_q(x, seeds, training=False)
        z_q, log_q = q["z"], q["log_q"]
        z_probe = self._draw(seeds, SITE_PROBE, batch, [self.model_config.latent_dim])
        log_q_probe = self.posterior(x, training=False).log_prob(z_probe)
        exact_pos = log_q - prior.log_prob(z_q)
        exact_probe = log_q_probe - prior.log_prob(z_probe)
        offsets = {"none": (0.0, 0.0), "prior": (-prior.log_prob(z_q),
                                                 -prior.log_prob(z_probe)),
                   "explicit": (exact_pos, exact_probe)}[self._offset()]
        x_c = self._critic_x(x, seeds)
        f1 = self._critic_pair("f1", (x_c, z_q), (x_c, z_probe), False, seeds, offsets)
        exact = exact_pos - exact_probe
        error = objectives.log_ratio_error(f1["pos"] - f1["neg"], exact)
        return {"d1_ratio_error": error, "d1_ratio_scale": tf.abs(exact),
                "d1_ratio_rel": (error, tf.abs(exact))}


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
