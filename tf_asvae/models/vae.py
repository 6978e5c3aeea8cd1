"""The VAE baseline: ELBO with a Gaussian or flow posterior (Kingma & Welling 2014;
Rezende & Mohamed 2015 for planar flows; Kingma et al. 2016 for IAF)."""

from __future__ import annotations

import keras

from tf_asvae import objectives
from tf_asvae.models.base import SITE_POSTERIOR, BaseModel, median_over_last_axis


@keras.saving.register_keras_serializable(package="tf_asvae")
class VAE(BaseModel):
    """Maximises the single-sample ELBO log p(x|z) + log p(z) - log q(z|x), z ~ q(z|x)."""

    kind = "vae"

    def metric_names(self):
        return ("loss", "recon_x", "kl", "reconstruction") + self.diagnostic_names()

    def diagnostic_names(self):
        return ("kl_exact", "posterior_scale", "recon_gap")

    def _forward(self, x, seeds, training):
        q = self._sample_q(x, seeds, training)
        z, log_q = q["z"], q["log_q"]
        log_px = self._observation_from_raw(self._decode_raw(
            z, training, self._dropout_seed(seeds, SITE_POSTERIOR))).log_prob(x)
        log_pz = self._prior().log_prob(z)
        return {
            "gen_loss": objectives.negative_elbo(log_px, log_pz, log_q),
            "disc_losses": {},
            "metrics": {"recon_x": -log_px, "kl": log_q - log_pz,
                        "kl_exact": log_q - log_pz,
                        "posterior_scale": median_over_last_axis(q["scale"])},
        }
