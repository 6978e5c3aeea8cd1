"""Keras 3 layers for the papers' networks. Every layer returns tensors."""

from tf_asvae.networks.blocks import ConvTrunk
from tf_asvae.networks.decoders import Decoder
from tf_asvae.networks.discriminators import JointDiscriminator
from tf_asvae.networks.encoders import BasisNoiseEncoder, GaussianEncoder, NoiseEncoder

__all__ = ["BasisNoiseEncoder", "ConvTrunk", "Decoder", "GaussianEncoder", "JointDiscriminator", "NoiseEncoder"]
