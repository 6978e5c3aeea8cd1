"""Model classes and the factory."""

from tf_asvae.models.asvae import ASVAE, ASVAE_G, ASVAE_R
from tf_asvae.models.avb import AVB, AVB_AC
from tf_asvae.models.base import BaseModel
from tf_asvae.models.vae import VAE

MODEL_CLASSES = {"vae": VAE, "asvae": ASVAE, "asvae_r": ASVAE_R, "asvae_g": ASVAE_G,
                 "avb": AVB, "avb_ac": AVB_AC}

__all__ = ["ASVAE", "ASVAE_G", "ASVAE_R", "AVB", "AVB_AC", "BaseModel", "MODEL_CLASSES", "VAE"]
