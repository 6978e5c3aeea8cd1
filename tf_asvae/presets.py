"""The papers' architectures as plain data.

AS-VAE Appendix B: Figure 5 (MNIST), Figure 6 (CIFAR-10), Figures 7-8 (ImageNet 64x64).
The figures survive only as extracted text, so the layer lists below are our reading of
them: convolution stacks with batch norm and ReLU, a dense ("MLP") layer to the latent
parameters, transposed convolutions back to the image, and a discriminator with an
x-branch of strided convolutions + global average pooling, a z-branch MLP,
concatenation and an MLP head.  Latent sizes follow the figures' "features" labels
(64 for MNIST, 100 for CIFAR-10, 2048 for ImageNet 64x64).  The ``synthetic`` preset is
AVB's toy experiment (four 2x2 binary images, 2-d latent, MLPs of 512 units).

Each preset is a :class:`~tf_asvae.config.ModelConfig` whose ``kind`` is replaced by
:func:`tf_asvae.build_model`.
"""

from __future__ import annotations

import dataclasses

from tf_asvae.config import (STABILIZER_FIELDS, FlowConfig, ModelConfig, NetworkConfig,
                             ObjectiveConfig)

_MNIST_NETWORK = NetworkConfig(
    architecture="mnist",
    encoder_conv=((32, 3, 2), (64, 3, 2)),
    encoder_mlp=(512,),
    decoder_mlp=(512,),
    decoder_start=(7, 7, 64),
    decoder_deconv=((64, 3, 2), (32, 3, 2)),
    disc_x_conv=((32, 3, 2), (64, 3, 2)),
    disc_z_mlp=(512,),
    disc_joint_mlp=(512, 512),
)

# Paper: "p(x|z) and q(z|x) are approximated with a normalizing flow of length 80" on
# MNIST.  Pixels are Bernoulli probabilities there, for which a flow on x is undefined, so
# the MNIST presets put the length-80 planar flow on q(z|x); a flow on p(x|z) is available
# with likelihood="gaussian" through FlowConfig.decoder_flow_length.
_MNIST = ModelConfig(
    kind="asvae",
    preset="mnist",
    image_shape=(28, 28, 1),
    latent_dim=64,
    likelihood="bernoulli",
    network=_MNIST_NETWORK,
    flows=FlowConfig(posterior_flow="planar", posterior_flow_length=80),
    objective=ObjectiveConfig(),
)

_CIFAR10 = ModelConfig(
    kind="asvae",
    preset="cifar10",
    image_shape=(32, 32, 3),
    latent_dim=100,
    likelihood="gaussian",
    network=NetworkConfig(
        architecture="cifar10",
        encoder_conv=((32, 3, 1), (32, 3, 1), (64, 3, 2), (64, 3, 1), (64, 3, 1), (64, 3, 2)),
        encoder_mlp=(512,),
        decoder_mlp=(512,),
        decoder_start=(4, 4, 64),
        decoder_deconv=((64, 3, 2), (64, 3, 1), (64, 3, 1), (32, 3, 2), (32, 3, 1),
                        (32, 3, 1), (16, 3, 2)),
        disc_x_conv=((16, 5, 2), (32, 5, 2), (64, 5, 2)),
        disc_z_mlp=(512,),
        disc_joint_mlp=(512, 512),
    ),
    flows=FlowConfig(),
    objective=ObjectiveConfig(),
)

_IMAGENET64 = ModelConfig(
    kind="asvae",
    preset="imagenet64",
    image_shape=(64, 64, 3),
    latent_dim=2048,
    likelihood="gaussian",
    network=NetworkConfig(
        architecture="imagenet64",
        encoder_conv=((32, 3, 1), (32, 3, 1), (64, 3, 1), (64, 3, 1), (128, 3, 2),
                      (128, 3, 1), (128, 3, 1), (256, 3, 2), (256, 3, 1), (256, 3, 1),
                      (256, 3, 2)),
        encoder_mlp=(),
        decoder_mlp=(),
        decoder_start=(8, 8, 256),
        decoder_deconv=((256, 3, 2), (256, 3, 1), (256, 3, 1), (128, 3, 2), (128, 3, 1),
                        (128, 3, 1), (64, 3, 2), (64, 3, 1), (64, 3, 1), (64, 3, 1)),
        disc_x_conv=((32, 5, 2), (64, 5, 2), (128, 5, 2), (256, 3, 2)),
        disc_z_mlp=(1024,),
        disc_joint_mlp=(1024, 512),
    ),
    flows=FlowConfig(),
    objective=ObjectiveConfig(),
)

_SYNTHETIC = ModelConfig(
    kind="avb",
    preset="synthetic",
    image_shape=(2, 2, 1),
    latent_dim=2,
    likelihood="bernoulli",
    network=NetworkConfig(
        architecture="mlp",
        encoder_conv=(),
        encoder_mlp=(512, 512),
        decoder_mlp=(512, 512),
        decoder_deconv=(),
        disc_x_conv=(),
        disc_x_mlp=(512,),
        disc_z_mlp=(512,),
        disc_joint_mlp=(512, 512),
        noise_dim=16,
        batch_norm=False,
        disc_dropout=0.0,
    ),
    flows=FlowConfig(),
    objective=ObjectiveConfig(),
)

PRESETS = {
    "mnist": _MNIST,
    "binarized_mnist": dataclasses.replace(_MNIST, preset="binarized_mnist"),
    "fashion_mnist": dataclasses.replace(_MNIST, preset="fashion_mnist"),
    "cifar10": _CIFAR10,
    "imagenet64": _IMAGENET64,
    "synthetic": _SYNTHETIC,
}

# Which sub-config owns each shorthand override accepted by ``preset_config``.
_OWNER = {}
for _key, _cls in (("network", NetworkConfig), ("flows", FlowConfig),
                   ("objective", ObjectiveConfig)):
    for _field in dataclasses.fields(_cls):
        _OWNER[_field.name] = _key


def preset_config(kind: str, preset: str, **overrides) -> ModelConfig:
    """The preset's ModelConfig for ``kind`` with ``overrides`` applied.

    Overrides are top-level fields (``latent_dim=8``), whole nested dicts
    (``flows=dict(posterior_flow="iaf", posterior_flow_length=2)``) or shorthand
    nested fields (``disc_steps=2``, ``posterior_flow_length=0``).
    AVB kinds use a black-box encoder, so the preset's posterior flow is dropped
    for them unless ``flows`` is given explicitly.
    """
    if preset not in PRESETS:
        raise ValueError(
            f"Unknown preset: Received: preset={preset!r}. Expected one of {tuple(PRESETS)}."
        )
    base = PRESETS[preset]
    top = {f.name for f in dataclasses.fields(ModelConfig)}
    changes: dict = {"kind": kind}
    nested: dict = {}
    for name, value in overrides.items():
        if name in top:
            changes[name] = value
        elif name in _OWNER:
            nested.setdefault(_OWNER[name], {})[name] = value
        else:
            raise ValueError(
                f"Unknown model option: Received: {name}={value!r}. Expected one of "
                f"{sorted(top | set(_OWNER))}."
            )
    if kind in ("avb", "avb_ac") and "flows" not in changes:
        nested.setdefault("flows", {}).setdefault("posterior_flow", "none")
        nested["flows"].setdefault("posterior_flow_length", 0)
    if (nested.get("flows", {}).get("posterior_flow") == "none"
            and "posterior_flow_length" not in nested.get("flows", {})):
        nested["flows"]["posterior_flow_length"] = 0
    for key, fields in nested.items():
        current = changes.get(key, getattr(base, key))
        if not isinstance(current, dict):
            current = dataclasses.asdict(current)
        if key == "objective" and "stabilizer" in fields:
            # A named stabilizer sets every remedy the overrides leave unnamed.
            for name in STABILIZER_FIELDS + ("generated_x",):
                if name not in fields:
                    current[name] = None
        changes[key] = {**current, **fields}
    # Validate nested values through the dataclasses (replace builds and checks them).
    data = base.to_dict()
    data.update({k: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v)
                 for k, v in changes.items()})
    return ModelConfig.from_dict(data)
