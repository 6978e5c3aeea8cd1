"""The papers' architectures as plain data.

AS-VAE Appendix B: Figure 5 (MNIST), Figure 6 (CIFAR-10), Figures 7-8 (ImageNet 64x64).
The figures survive only as extracted text, so the layer lists below are our reading of
them: convolution stacks with batch norm and ReLU, a dense ("MLP") layer to the latent
parameters, transposed convolutions back to the image, and a discriminator with an
x-branch of strided convolutions + global average pooling, a z-branch MLP,
concatenation and an MLP head.  Latent sizes follow the figures' "features" labels
(64 for MNIST, 100 for CIFAR-10, 2048 for ImageNet 64x64).  The ``synthetic`` preset is
AVB's toy experiment (four 2x2 binary images, 2-d latent, MLPs of 512 units); its
AS-VAE passes the decoder's probabilities as x~ (``generated_x="mean"``): on four pixels
one straight-through binary sample per code is a gradient too noisy for the decoder
(exact log p(x) -3.0 against -1.4025 with "mean", docs/RESULTS.md), while on MNIST the
straight-through default is the better one (IS-NLL 94.75 against 97.18).  A named
``stabilizer`` override resets it with the other remedies.

Each preset is a :class:`~tf_asvae.config.ModelConfig` whose ``kind`` is replaced by
:func:`tf_asvae.build_model`.  The ``conv`` family (:func:`conv_config`) is built for
any image shape whose sides are multiples of 4, scaled from the MNIST and CIFAR-10
networks.
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
    # AVB Table 1's numbers (docs/RESULTS.md) were measured without R1 and with eq. 11's
    # full gradient; the default stabilizer's values for both were chosen on MNIST.
    objective=ObjectiveConfig(generated_x="mean", gradient_penalty=0.0,
                              recon_z_to_decoder=True),
)

PRESETS = {
    "mnist": _MNIST,
    "binarized_mnist": dataclasses.replace(_MNIST, preset="binarized_mnist"),
    "fashion_mnist": dataclasses.replace(_MNIST, preset="fashion_mnist"),
    "cifar10": _CIFAR10,
    "imagenet64": _IMAGENET64,
    "synthetic": _SYNTHETIC,
}

# --------------------------------------------------------------------------------------
# The "conv" family: any image size, scaled from the paper's MNIST and CIFAR-10 networks

#: Presets built for the data's shape rather than stored (``preset_config(kind, "conv",
#: image_shape=..., likelihood=...)``).
PRESET_FAMILIES = ("conv",)
#: Every name ``preset_config`` accepts.
PRESET_NAMES = tuple(PRESETS) + PRESET_FAMILIES
CONV_MIN_SIDE = 8
CONV_MAX_LEVELS = 6
CONV_MAX_FILTERS = 256


def conv_levels(height: int, width: int) -> int:
    """Stride-2 levels of the conv family for an ``height x width`` image: the most
    levels (at least 2) that divide both sides and leave a start of at least 4x4 (else
    2 levels); ValueError naming buildable sizes when there is none."""
    h, w = int(height), int(width)
    if h >= CONV_MIN_SIDE and w >= CONV_MIN_SIDE and h % 4 == 0 and w % 4 == 0:
        best = 2
        for d in range(2, CONV_MAX_LEVELS + 1):
            if h % 2**d == 0 and w % 2**d == 0 and min(h, w) // 2**d >= 4:
                best = d
        return best

    def near(v):
        low = max(CONV_MIN_SIDE, v - v % 4)
        return sorted({low, low + 4} if low != v else {v})

    options = [f"{a}x{b}" for a in near(h) for b in near(w)]
    raise ValueError(
        f"The conv preset family builds images whose height and width are multiples of 4 "
        f"and at least {CONV_MIN_SIDE} (8, 12, 16, ..., 28, 32, 48, 64, ...): the decoder "
        f"doubles a start size at least twice. Received: image_shape with {h}x{w}; "
        f"buildable sizes nearby: {options} (e.g. --image-size {options[-1].replace('x', ' ')}).")


def conv_config(image_shape, likelihood: str | None = None, kind: str = "asvae") -> ModelConfig:
    """The ``conv`` preset for ``image_shape`` = (H, W, C).

    Scaled from AS-VAE's Figures 5-6: ``d`` stride-2 3x3 convolutions (d from
    :func:`conv_levels`: 2 for 28x28 as the MNIST network, 3 for 32x32 as CIFAR-10,
    4 for 64x64 ...) with 32, 64, 128, 256, 256, ... filters; colour images add a
    stride-1 convolution before each stride-2 one (the CIFAR-10 network's extra
    depth); a 512-unit dense layer to the latent code (64 for grey images, 100 for
    colour, the papers' sizes); a decoder mirroring the encoder from ``(H/2^d, W/2^d)``;
    critics with the encoder's strided convolutions (5x5 for colour, as CIFAR-10's),
    average pooling, 512-unit z and joint MLPs. The likelihood is Bernoulli for grey
    data unless given (Gaussian for natural 8-bit images). No posterior flow
    (``flows`` / ``--flow-length`` adds one). For 28x28x1 the networks are the MNIST
    preset's.
    """
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or shape[2] not in (1, 3) or min(shape) <= 0:
        raise ValueError("The conv preset family needs image_shape=(height, width, 1 or 3). "
                         f"Received: image_shape={image_shape!r}.")
    h, w, c = shape
    d = conv_levels(h, w)
    filters = [min(32 * 2**i, CONV_MAX_FILTERS) for i in range(d)]
    colour = c == 3
    encoder = []
    for f in filters:
        encoder += ([(f, 3, 1)] if colour else []) + [(f, 3, 2)]
    decoder = []
    for f in reversed(filters):
        decoder += [(f, 3, 2)] + ([(f, 3, 1)] if colour else [])
    if likelihood is None:
        likelihood = "gaussian" if colour else "bernoulli"
    return ModelConfig(
        kind=kind, preset="conv", image_shape=shape, latent_dim=100 if colour else 64,
        likelihood=likelihood,
        network=NetworkConfig(
            architecture="conv", encoder_conv=tuple(encoder), encoder_mlp=(512,),
            decoder_mlp=(512,), decoder_start=(h // 2**d, w // 2**d, filters[-1]),
            decoder_deconv=tuple(decoder),
            disc_x_conv=tuple((f, 5 if colour else 3, 2) for f in filters),
            disc_z_mlp=(512,), disc_joint_mlp=(512, 512)),
        flows=FlowConfig(), objective=ObjectiveConfig())


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
    if preset not in PRESET_NAMES:
        raise ValueError(
            f"Unknown preset: Received: preset={preset!r}. Expected one of {PRESET_NAMES}."
        )
    if preset == "conv":
        if "image_shape" not in overrides:
            raise ValueError("The conv preset family is built for an image shape: pass "
                             "image_shape=(height, width, channels).")
        base = conv_config(overrides["image_shape"], overrides.get("likelihood"), kind)
    else:
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
