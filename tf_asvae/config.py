"""Typed, frozen configurations with JSON round-trip.

Every model is fully described by a :class:`ModelConfig`; ``ModelConfig.to_dict()``
is what ``get_config`` of the Keras models returns and what the training program
writes to ``RUN/config.json``.  Validation happens in ``__post_init__`` so that a bad
value fails at construction time with a message naming it and the accepted values.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, Tuple

MODEL_KINDS = ("vae", "asvae", "asvae_r", "asvae_g", "avb", "avb_ac")
LIKELIHOODS = ("bernoulli", "gaussian")
ARCHITECTURES = ("mnist", "cifar10", "imagenet64", "mlp", "conv")
# Hidden-layer nonlinearities (Keras activation names); the papers use "relu".
ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu", "silu")
POSTERIOR_FLOWS = ("none", "planar", "iaf")


def _check_choice(name: str, value: Any, choices) -> None:
    if value not in choices:
        raise ValueError(
            f"Unknown {name}: Received: {name}={value!r}. Expected one of {tuple(choices)}."
        )


def _check_positive(name: str, value: Any, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    # NaN fails both comparisons; inf (an infinite learning rate or temperature) is
    # refused as well.
    ok = ok and (value >= 0 if allow_zero else value > 0) and value != float("inf")
    if not ok:
        bound = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"{name} must be {bound} finite number. Received: {name}={value!r}.")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(
            f"{name} must be an integer >= {minimum}. Received: {name}={value!r}."
        )


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """Shape of the encoder, decoder and discriminator networks.

    ``conv_*`` entries are ``(filters, kernel_size, stride)`` triples; see
    ``presets.py`` for the paper's values (AS-VAE Appendix B, Figures 5-8).
    ``decoder_start`` is the spatial size ``(h, w, c)`` that the decoder's first
    dense layer reshapes to before its transposed convolutions.
    ``disc_x_pooling``: how the critics' x-branch turns its feature maps into a vector,
    ``"average"`` (global average pooling, AS-VAE Figs. 5-8) or ``"flatten"`` (every
    position kept: a critic that must locate q(z|x), as AVB's T without adaptive
    contrast, needs to know more of x than the average of its features).
    ``noise_encoder``: AVB's black-box encoder, ``"mlp"`` (noise concatenated to x's
    features, then an MLP head) or ``"basis"`` (AVB Sec. 5's MNIST encoder: a
    combination of ``noise_basis`` learned noise basis vectors, each an MLP
    ``noise_basis_mlp`` of its own ``noise_dim`` noise units, with coefficients from x;
    its moments are exact given the basis vectors', see ``BasisNoiseEncoder``).
    """

    architecture: str = "mnist"
    encoder_conv: Tuple[Tuple[int, int, int], ...] = ((32, 3, 2), (64, 3, 2))
    encoder_mlp: Tuple[int, ...] = (512,)
    decoder_mlp: Tuple[int, ...] = (512,)
    decoder_start: Tuple[int, int, int] = (7, 7, 64)
    decoder_deconv: Tuple[Tuple[int, int, int], ...] = ((64, 3, 2), (32, 3, 2))
    disc_x_conv: Tuple[Tuple[int, int, int], ...] = ((32, 3, 2), (64, 3, 2))
    disc_z_mlp: Tuple[int, ...] = (512,)
    disc_x_mlp: Tuple[int, ...] = ()
    disc_x_pooling: str = "average"
    disc_joint_mlp: Tuple[int, ...] = (512, 512)
    noise_dim: int = 32
    noise_encoder: str = "mlp"
    noise_basis: int = 32
    noise_basis_mlp: Tuple[int, ...] = (128, 128, 128)
    batch_norm: bool = True
    encoder_dropout: float = 0.0
    decoder_dropout: float = 0.0
    disc_dropout: float = 0.2
    activation: str = "relu"

    def __post_init__(self):
        _check_choice("architecture", self.architecture, ARCHITECTURES)
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("disc_x_pooling", self.disc_x_pooling, ("average", "flatten"))
        for name in ("encoder_conv", "decoder_deconv", "disc_x_conv"):
            value = getattr(self, name)
            object.__setattr__(self, name, tuple(tuple(int(v) for v in t) for t in value))
            for triple in getattr(self, name):
                if len(triple) != 3 or min(triple) <= 0:
                    raise ValueError(
                        f"{name} entries must be positive (filters, kernel, stride) "
                        f"triples. Received: {name}={value!r}."
                    )
        _check_choice("noise_encoder", self.noise_encoder, ("mlp", "basis"))
        for name in ("encoder_mlp", "decoder_mlp", "disc_z_mlp", "disc_x_mlp",
                     "disc_joint_mlp", "decoder_start", "noise_basis_mlp"):
            value = tuple(int(v) for v in getattr(self, name))
            object.__setattr__(self, name, value)
            if any(v <= 0 for v in value):
                raise ValueError(
                    f"{name} must hold positive sizes. Received: {name}={value!r}."
                )
        if len(self.decoder_start) != 3:
            raise ValueError(
                f"decoder_start must be (height, width, channels). "
                f"Received: decoder_start={self.decoder_start!r}."
            )
        _check_int("noise_dim", self.noise_dim, 1)
        _check_int("noise_basis", self.noise_basis, 1)
        for name in ("encoder_dropout", "decoder_dropout", "disc_dropout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1). Received: {name}={value!r}.")


@dataclasses.dataclass(frozen=True)
class FlowConfig:
    """Normalizing flows on q(z|x) (``posterior_*``) and on p(x|z) (``decoder_*``).

    The paper's MNIST set-up uses planar flows of length 80 (Rezende & Mohamed 2015).
    A flow on p(x|z) transforms the Gaussian observation model on flattened pixels and
    therefore needs ``likelihood="gaussian"``.
    """

    posterior_flow: str = "none"
    posterior_flow_length: int = 0
    posterior_flow_amortized: bool = False
    iaf_hidden_units: Tuple[int, ...] = (256, 256)
    decoder_flow_length: int = 0

    def __post_init__(self):
        _check_choice("posterior_flow", self.posterior_flow, POSTERIOR_FLOWS)
        _check_int("posterior_flow_length", self.posterior_flow_length, 0)
        _check_int("decoder_flow_length", self.decoder_flow_length, 0)
        if self.posterior_flow != "none" and self.posterior_flow_length == 0:
            raise ValueError(
                f"posterior_flow={self.posterior_flow!r} needs posterior_flow_length >= 1. "
                f"Received: posterior_flow_length={self.posterior_flow_length}."
            )
        if self.posterior_flow == "none" and self.posterior_flow_length:
            raise ValueError(
                "posterior_flow_length > 0 needs posterior_flow in ('planar', 'iaf'). "
                f"Received: posterior_flow='none', posterior_flow_length="
                f"{self.posterior_flow_length}."
            )
        units = tuple(int(u) for u in self.iaf_hidden_units)
        if not units or min(units) <= 0:
            raise ValueError(
                f"iaf_hidden_units must be positive sizes. Received: {self.iaf_hidden_units!r}."
            )
        object.__setattr__(self, "iaf_hidden_units", units)


GENERATED_X = ("straight_through", "mean", "sample", "relaxed")
CRITIC_OFFSETS = ("none", "prior", "explicit")
CRITIC_FORMS = ("mlp", "quadratic")

# Named settings of the critics' remedies (ObjectiveConfig fields left as None take the
# stabilizer's value).  "paper": the papers' critics as published.  "default": what
# measurably learns on MNIST (docs/RESULTS.md, "The adversarial models learn").
STABILIZERS = {
    "paper": dict(critic_offset="none", generative_critic_offset="none", critic_form="mlp",
                  disc_steps=1, critic_lr_scale=1.0, instance_noise=0.0,
                  gradient_penalty=0.0, spectral_norm=False, ac_covariance="diagonal",
                  ac_draws="random", generative_weight=1.0, recon_z_to_decoder=True),
    "default": dict(critic_offset="explicit", generative_critic_offset="none",
                    critic_form="mlp", disc_steps=1, critic_lr_scale=1.0,
                    instance_noise=0.0, gradient_penalty=None, spectral_norm=False,
                    ac_covariance="full", ac_draws="matched", generative_weight=1.0,
                    recon_z_to_decoder=False),
}
STABILIZER_FIELDS = tuple(STABILIZERS["paper"])
# The default stabilizer's R1 weight per model kind (its ``gradient_penalty=None``,
# see resolve_gradient_penalty): AS-VAE's critics carry the closed-form part of their
# log-ratio in their offsets, so the penalty only smooths the network's remainder
# (MNIST, 5 epochs: AS-VAE-r 93.11 -> 92.28, AS-VAE 94.75 -> 93.99); AVB's T must
# represent the whole KL itself, and the penalty flattened it (AVB+AC 32-d: log p(x) by
# IS -92.62 -> -130.5, T read 1.3 nats).  docs/RESULTS.md.
DEFAULT_GRADIENT_PENALTY = {"asvae": 1.0, "asvae_r": 1.0, "asvae_g": 1.0}


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
    """Knobs of the training objective and of the critics' training.

    generated_x: how x_theta(z, xi) is produced for the second (generative) half of
      AS-VAE and for the critics' generated pairs.  ``"straight_through"`` (Bernoulli
      pixels): a binary sample of p(x|z), with the gradient of the pixel probabilities
      (straight-through estimator, Bengio et al. 2013); the critics then see binary images
      on both sides of every pair, real ones being drawn as Bernoulli(x) (binary data
      stays as it is; grey levels are the probabilities of binary pixels, the AS-VAE
      paper's reading of MNIST).  ``"mean"``: the decoder's mean (the pixel
      probabilities: the paper's "continuous input as the probability of a binary
      pixel"); real images are then given to the critics as they are, so on binary data
      every real pixel is 0 or 1 and no generated one is, and a critic can separate the
      pairs by x alone (its optimal logit is infinite).  ``"sample"``: a
      reparameterised sample (Gaussian likelihood).  ``"relaxed"``: a relaxed Bernoulli
      (Concrete) sample at ``relaxed_temperature`` (Bernoulli only; like "mean", not of
      the data's kind).  ``None``: from the likelihood and the stabilizer (Bernoulli:
      "mean" for "paper", else "straight_through"; Gaussian: "sample"), resolved by
      :class:`ModelConfig`.
    ac_num_samples: noise draws per example for the mean and standard deviation of
      q(z|x) in AVB's adaptive contrast.  The draws are the same at every step (common
      random numbers), so r(z|x) is a function of x alone and the critic, which sees x,
      can estimate KL(q(z|x) || r(z|x)) without a bias from the moments' noise.
    min_scale: lower bound on every Gaussian standard deviation.

    The critics' remedies (``None``: the ``stabilizer``'s value; see ``STABILIZERS``):

    stabilizer: ``"paper"`` (the critics as published) or ``"default"``.
    critic_offset: known parts of the optimum of AS-VAE's f_psi1 and AVB's T, added to
      the network's output so that the network learns only the rest (the official AVB
      code adds the known ``-log p(z)`` to its adversary,
      LMescheder/AdversarialVariationalBayes#4).  ``"none"``: the network alone (paper).
      ``"prior"``: the prior's term ``-log p(z)`` (``-log N(z~)`` for T with adaptive
      contrast).  ``"explicit"``: every closed-form part: f_psi1 + ``log q(z|x) -
      log p(z)`` (the optimum minus this is ``log q(x) - log p_theta(x)``, a function of
      x alone); AVB's q(z|x) has no density, so T gets nothing (its prior's term alone,
      ``"prior"``, made AVB drift on the synthetic 2x2 images: exact log p(x) -1.585
      against -1.404 without it, AVB Table 1 setting, docs/RESULTS.md).  The encoder/decoder objective
      uses the same critic output, so with ``"explicit"`` AS-VAE's first half is the
      ELBO minus the network's residual.
    generative_critic_offset: the same for AS-VAE's f_psi2: ``"prior"`` adds
      ``+log p(z)``, ``"explicit"`` adds ``log p(x|z) + log p(z)`` (the rest is
      ``-log q_phi(z) - log q(x)``, a sum of a function of z and one of x).  With
      ``"explicit"`` the second half's objective holds the decoder's entropy at prior
      codes explicitly (``-log p(x~|z)``, part of KL(p(x, z) || q(x, z))); only the
      critic's estimate of ``log q(x~)`` opposes it, and on MNIST (5 epochs) that cost
      AS-VAE 2.8 nats of likelihood against ``"none"``, the default
      (docs/RESULTS.md).
    critic_form: ``"mlp"`` (the papers' joint network) or ``"quadratic"`` (adds terms
      quadratic in z with x-dependent coefficients and an inner product of x- and
      z-features, which can represent Gaussian log-ratios; see
      :class:`tf_asvae.networks.JointDiscriminator`).
    disc_steps: critic updates per encoder/decoder update (AVB Sec. 5 uses 2).
    critic_lr_scale: the critics' Adam learning rate over the encoder/decoder's.
    instance_noise: standard deviation of Gaussian noise added to every x a critic sees,
      real and generated alike (Sonderby et al. 2017; Arjovsky & Bottou 2017): the
      noised distributions overlap, so the log-ratio is finite.
    gradient_penalty: weight gamma of the zero-centred penalty
      ``gamma / 2 * E_pos ||grad_(x, z) f(x, z)||^2`` on each critic's positive pairs
      (R1, Mescheder, Geiger & Nowozin 2018, "Which training methods for GANs do
      actually converge?"), on the network part of the logit.  ``None`` (the default
      stabilizer): by model kind, ``DEFAULT_GRADIENT_PENALTY`` (1 for AS-VAE's critics,
      0 for AVB's T); the models read it through ``resolve_gradient_penalty``, and the
      config keeps ``None``, so that a preset stays the same for every kind.
    spectral_norm: spectrally normalised hidden layers in the critics (Miyato et al.
      2018, "Spectral normalization for generative adversarial networks").
    ac_covariance: the contrast r(z|x) of AVB's adaptive contrast: ``"diagonal"`` (the
      paper, Sec. 4) or ``"full"`` (the draws' full covariance, so that correlations of
      q(z|x) are in log r and not left to the critic; see ``tf_asvae.models.avb``).
    ac_draws: the fixed noise draws from which adaptive contrast takes q(z|x)'s moments:
      ``"random"`` (plain N(0, I) draws) or ``"matched"`` (antithetic draws whitened to
      exactly N(0, I)'s mean and covariance, :func:`tf_asvae.distributions.
      matched_normal_draws`): for a code linear in the noise, r(z|x) is then q(z|x)'s
      Gaussian exactly, where 64 plain draws of 32 noise units leave the critic a 12.6-nat
      mismatch to learn.  With plain draws AVB+AC (binarized MNIST, 32-d, CPU budget)
      drifted after 2-3 epochs on two of three runs (IS -92.6, -97.7, -110.1); with
      matched draws it improved at every epoch on seeds 0-2 (-89.9, -89.9, -90.4, ahead
      of the 32-d VAE's -91.6, -91.5, -92.3; docs/RESULTS.md).
    generative_weight: the weight lambda of AS-VAE's second half in eq. 11,
      ``L_VAEx + lambda * L_VAEz`` (the paper: 1).  The critics' losses are unchanged.
    recon_z_to_decoder: whether the z-reconstruction term log q(z | x_theta(z, xi)) of
      L_VAEz differentiates into the decoder (eq. 11: yes).  With ``False`` it trains
      the encoder to invert generated images and the decoder meets the second half only
      through -f_psi2.  The decoder's gradient of that term rewards generated images
      that carry z in any pattern the encoder can read: when f_psi2's logit stays far
      below the log-ratio it stands for, AS-VAE's decoder can write z into stripes at
      prior codes (docs/RESULTS.md).  The default stabilizer keeps it out: with R1 on the
      critics, AS-VAE's IS-NLL went from 93.99 to 91.96 on MNIST (5 epochs; the VAE:
      92.21) and its samples' classifier score from 5.21 to 6.34 (the VAE: 6.01).
    """

    generated_x: str | None = None
    relaxed_temperature: float = 0.5
    ac_num_samples: int = 64
    min_scale: float = 1e-3
    stabilizer: str = "default"
    critic_offset: str | None = None
    generative_critic_offset: str | None = None
    critic_form: str | None = None
    disc_steps: int | None = None
    critic_lr_scale: float | None = None
    instance_noise: float | None = None
    gradient_penalty: float | None = None
    spectral_norm: bool | None = None
    ac_covariance: str | None = None
    ac_draws: str | None = None
    generative_weight: float | None = None
    recon_z_to_decoder: bool | None = None

    def __post_init__(self):
        _check_choice("stabilizer", self.stabilizer, tuple(STABILIZERS))
        for name, value in STABILIZERS[self.stabilizer].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if self.generated_x is not None:
            _check_choice("generated_x", self.generated_x, GENERATED_X)
        _check_positive("relaxed_temperature", self.relaxed_temperature)
        _check_int("disc_steps", self.disc_steps, 1)
        _check_int("ac_num_samples", self.ac_num_samples, 2)
        _check_positive("min_scale", self.min_scale)
        _check_choice("critic_offset", self.critic_offset, CRITIC_OFFSETS)
        _check_choice("generative_critic_offset", self.generative_critic_offset,
                      CRITIC_OFFSETS)
        _check_choice("critic_form", self.critic_form, CRITIC_FORMS)
        _check_positive("critic_lr_scale", self.critic_lr_scale)
        _check_positive("instance_noise", self.instance_noise, allow_zero=True)
        if self.gradient_penalty is not None:
            _check_positive("gradient_penalty", self.gradient_penalty, allow_zero=True)
        _check_choice("ac_covariance", self.ac_covariance, ("diagonal", "full"))
        _check_choice("ac_draws", self.ac_draws, ("random", "matched"))
        _check_positive("generative_weight", self.generative_weight)
        for name in ("spectral_norm", "recon_z_to_decoder"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool. "
                                 f"Received: {name}={getattr(self, name)!r}.")

    def replace(self, **changes) -> "ObjectiveConfig":
        """A copy with ``changes``; a new ``stabilizer`` also sets every remedy (and
        ``generated_x``) not named in ``changes`` to the new stabilizer's value."""
        if "stabilizer" in changes:
            for name in STABILIZER_FIELDS + ("generated_x",):
                changes.setdefault(name, None)
        return dataclasses.replace(self, **changes)


def _parse_overrides(items, cls, what: str) -> dict:
    """``["KEY=VALUE", ...]`` -> typed overrides of ``cls``'s scalar fields (str, int,
    float, bool; a type named in the field's annotation).  Raises ValueError naming an
    unknown key or a value of the wrong type."""
    fields = {f.name: str(f.type) for f in dataclasses.fields(cls)
              if "Tuple" not in str(f.type)}
    out = {}
    for item in items or ():
        key, sep, text = str(item).partition("=")
        key, text = key.strip(), text.strip()
        if not sep or key not in fields:
            raise ValueError(f"{what} overrides are KEY=VALUE with KEY one of "
                             f"{sorted(fields)}. Received: {item!r}.")
        annotation = fields[key]
        if "bool" in annotation:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"{key} must be true or false. Received: {key}={text!r}.")
            out[key] = text.lower() in ("true", "1")
            continue
        try:
            value = (int(text) if "int" in annotation else
                     float(text) if "float" in annotation else text)
        except ValueError:
            kind = "an integer" if "int" in annotation else "a number"
            raise ValueError(f"{key} must be {kind}. Received: {key}={text!r}.") from None
        out[key] = value
    return out


def parse_objective_overrides(items) -> dict:
    """``["critic_form=quadratic", "disc_steps=2", ...]`` -> typed ObjectiveConfig
    overrides (the command line's ``--objective KEY=VALUE``)."""
    return _parse_overrides(items, ObjectiveConfig, "Objective")


def parse_network_overrides(items) -> dict:
    """``["batch_norm=false", "disc_dropout=0.1", ...]`` -> typed NetworkConfig
    overrides of its scalar fields (the command line's ``--network KEY=VALUE``)."""
    return _parse_overrides(items, NetworkConfig, "Network")


def resolve_generated_x(objective: ObjectiveConfig, likelihood: str) -> str:
    """``objective.generated_x``, or its default for the likelihood and stabilizer."""
    if objective.generated_x is not None:
        return objective.generated_x
    if likelihood == "gaussian":
        return "sample"
    return "mean" if objective.stabilizer == "paper" else "straight_through"


def resolve_gradient_penalty(objective: ObjectiveConfig, kind: str) -> float:
    """``objective.gradient_penalty``, or the default stabilizer's weight for ``kind``."""
    if objective.gradient_penalty is not None:
        return objective.gradient_penalty
    return DEFAULT_GRADIENT_PENALTY.get(kind, 0.0)


_NESTED = {"network": NetworkConfig, "flows": FlowConfig, "objective": ObjectiveConfig}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model: kind, data shape, networks, flows, objective."""

    kind: str = "asvae"
    preset: str = "mnist"
    image_shape: Tuple[int, int, int] = (28, 28, 1)
    latent_dim: int = 64
    likelihood: str = "bernoulli"
    network: NetworkConfig = dataclasses.field(default_factory=NetworkConfig)
    flows: FlowConfig = dataclasses.field(default_factory=FlowConfig)
    objective: ObjectiveConfig = dataclasses.field(default_factory=ObjectiveConfig)

    def __post_init__(self):
        _check_choice("kind", self.kind, MODEL_KINDS)
        _check_int("latent_dim", self.latent_dim, 1)
        _check_choice("likelihood", self.likelihood, LIKELIHOODS)
        shape = tuple(self.image_shape)
        if len(shape) != 3 or any(not isinstance(s, int) or s <= 0 for s in shape):
            raise ValueError(
                "image_shape must be (height, width, channels) of positive integers. "
                f"Received: image_shape={self.image_shape!r}."
            )
        object.__setattr__(self, "image_shape", shape)
        for key, cls in _NESTED.items():
            value = getattr(self, key)
            if isinstance(value, Mapping):
                object.__setattr__(self, key, cls(**value))
            elif not isinstance(value, cls):
                raise ValueError(f"{key} must be a {cls.__name__}. Received: {value!r}.")
        if self.flows.decoder_flow_length and self.likelihood != "gaussian":
            raise ValueError(
                "A flow on p(x|z) needs likelihood='gaussian'. Received: "
                f"likelihood={self.likelihood!r}, decoder_flow_length="
                f"{self.flows.decoder_flow_length}."
            )
        if self.kind in ("avb", "avb_ac") and self.flows.posterior_flow != "none":
            raise ValueError(
                f"kind={self.kind!r} uses a black-box (noise-input) encoder; a posterior "
                f"flow does not apply. Received: posterior_flow={self.flows.posterior_flow!r}."
            )
        gx = resolve_generated_x(self.objective, self.likelihood)
        if gx != self.objective.generated_x:
            object.__setattr__(self, "objective",
                               dataclasses.replace(self.objective, generated_x=gx))
        if gx == "straight_through" and self.likelihood != "bernoulli":
            raise ValueError(
                "generated_x='straight_through' applies to Bernoulli pixels only. Received: "
                f"generated_x='straight_through', likelihood={self.likelihood!r}."
            )
        if gx == "sample" and self.likelihood == "bernoulli":
            raise ValueError(
                "generated_x='sample' is not differentiable for Bernoulli pixels; use "
                "'mean' or 'relaxed'. Received: generated_x='sample', likelihood='bernoulli'."
            )
        if gx == "relaxed" and self.likelihood != "bernoulli":
            raise ValueError(
                "generated_x='relaxed' applies to Bernoulli pixels only. Received: "
                f"generated_x='relaxed', likelihood={self.likelihood!r}."
            )

    @property
    def num_pixels(self) -> int:
        h, w, c = self.image_shape
        return h * w * c

    def replace(self, **changes) -> "ModelConfig":
        """A copy with top-level or nested (``network=dict(...)``) fields changed."""
        for key, cls in _NESTED.items():
            if key in changes and isinstance(changes[key], Mapping):
                current = getattr(self, key)
                changes[key] = (current.replace(**changes[key]) if key == "objective"
                                else dataclasses.replace(current, **changes[key]))
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return _to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping) -> "ModelConfig":
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown ModelConfig fields: {unknown}. Expected: {sorted(known)}.")
        objective = data.get("objective")
        if (isinstance(objective, Mapping) and "ac_draws" not in objective
                and all(k in objective for k in STABILIZER_FIELDS if k != "ac_draws")):
            # A complete objective saved before ``ac_draws`` existed (cd81c95): that
            # model's adaptive contrast used plain draws, and its critic learned them.
            data["objective"] = {**objective, "ac_draws": "random"}
        for key, sub in _NESTED.items():
            if key in data:
                sub_known = {f.name for f in dataclasses.fields(sub)}
                bad = sorted(set(data[key]) - sub_known)
                if bad:
                    raise ValueError(
                        f"Unknown {sub.__name__} fields: {bad}. Expected: {sorted(sub_known)}."
                    )
                data[key] = sub(**data[key])
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        return cls.from_dict(json.loads(text))


def _to_jsonable(value):
    if isinstance(value, dict):
        return {k: _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    return value


# --------------------------------------------------------------------------------------
# Training

STRATEGIES = ("default", "mirrored", "multiworker")
MIXED_PRECISION = ("off", "auto", "float16", "bfloat16")


def _check_optional_int(name: str, value: Any, minimum: int) -> None:
    if value is not None:
        _check_int(name, value, minimum)


LR_SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How a model is trained by ``trainers/train.py`` (the ``"training"`` entry of
    ``RUN/config.json``).

    epochs: passes of ``steps_per_epoch`` training steps, each followed by validation.
    steps_per_epoch: training steps per epoch; ``None``: one pass over the training split.
    validation_steps: validation batches per epoch; ``None``: the whole validation split.
    learning_rate: Adam's learning rate for both players (paper: 1e-4, AS-VAE Sec. 5).
    lr_schedule: ``"constant"`` (the papers') or ``"cosine"``: both players' learning
      rates fall along a cosine from ``learning_rate`` to ``lr_final_fraction`` times it
      over ``epochs * steps_per_epoch`` steps (SGDR without restarts, Loshchilov &
      Hutter 2017; ``tf_asvae.models.base.cosine_learning_rate``).  Early stopping may
      end the run before the end of the curve.
    lr_final_fraction: the cosine schedule's last learning rate over its first.
    adam_beta_1: Adam's first-moment decay for both players (Keras' default 0.9; AVB's
      code uses 0.5, as DCGAN does, Radford et al. 2016).
    patience, min_delta, restore_best_weights: early stopping on ``val_reconstruction``
      (the mean of the validation reconstruction losses of x and z, as in the paper);
      an epoch improves on the best when it is lower by more than ``min_delta``;
      training stops after ``patience`` epochs without improvement.
    jit_compile: XLA-compile the training step.
    mixed_precision: ``"off"``; ``"auto"`` (``mixed_float16`` on GPU, ``mixed_bfloat16``
      on CPU/TPU); or the policy ``"float16"``/``"bfloat16"`` explicitly.  The networks
      compute in the low precision; log-densities, logits and losses stay float32.
    strategy: ``"default"`` (one device), ``"mirrored"`` (the local GPUs, or
      ``num_devices`` logical CPUs) or ``"multiworker"`` (``TF_CONFIG`` cluster).
    num_devices: devices of the mirrored strategy (``None``: every GPU, or one CPU).
    max_train_examples: keep only the first examples of the training split.
    backup_freq: ``"epoch"`` or a number of training steps between the
      ``BackupAndRestore`` backups that let an interrupted run resume.
    num_images: images in each logged grid of samples and of reconstructions (0: none).
    save_png: also write the grids as PNG files under ``RUN/images/``.
    deterministic: TensorFlow op determinism (``tf.config.experimental.
      enable_op_determinism``) on top of the seeds, so that two runs of the same
      configuration on the same hardware give bit-identical weights (slower).
    """

    epochs: int = 5
    steps_per_epoch: int | None = 60
    validation_steps: int | None = 10
    learning_rate: float = 1e-4
    lr_schedule: str = "constant"
    lr_final_fraction: float = 0.0
    adam_beta_1: float = 0.9
    patience: int = 3
    min_delta: float = 0.0
    restore_best_weights: bool = True
    jit_compile: bool = False
    mixed_precision: str = "off"
    strategy: str = "default"
    num_devices: int | None = None
    max_train_examples: int | None = None
    backup_freq: int | str = "epoch"
    num_images: int = 64
    save_png: bool = False
    deterministic: bool = False

    def __post_init__(self):
        _check_int("epochs", self.epochs, 1)
        _check_optional_int("steps_per_epoch", self.steps_per_epoch, 1)
        _check_optional_int("validation_steps", self.validation_steps, 1)
        _check_positive("learning_rate", self.learning_rate)
        _check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _check_positive("lr_final_fraction", self.lr_final_fraction, allow_zero=True)
        if self.lr_final_fraction > 1:
            raise ValueError(f"lr_final_fraction must be at most 1. "
                             f"Received: lr_final_fraction={self.lr_final_fraction!r}.")
        _check_positive("adam_beta_1", self.adam_beta_1, allow_zero=True)
        if self.adam_beta_1 >= 1:
            raise ValueError(f"adam_beta_1 must be below 1. "
                             f"Received: adam_beta_1={self.adam_beta_1!r}.")
        _check_int("patience", self.patience, 0)
        _check_positive("min_delta", self.min_delta, allow_zero=True)
        for name in ("restore_best_weights", "jit_compile", "save_png", "deterministic"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool. Received: {name}={getattr(self, name)!r}.")
        _check_choice("mixed_precision", self.mixed_precision, MIXED_PRECISION)
        _check_choice("strategy", self.strategy, STRATEGIES)
        _check_optional_int("num_devices", self.num_devices, 1)
        if self.num_devices is not None and self.num_devices > 1 and self.strategy != "mirrored":
            raise ValueError(
                f"num_devices > 1 needs strategy='mirrored'. Received: num_devices="
                f"{self.num_devices}, strategy={self.strategy!r}."
            )
        _check_optional_int("max_train_examples", self.max_train_examples, 1)
        if self.backup_freq != "epoch":
            if (not isinstance(self.backup_freq, int) or isinstance(self.backup_freq, bool)
                    or self.backup_freq < 1):
                raise ValueError(
                    "backup_freq must be 'epoch' or a positive number of steps. "
                    f"Received: backup_freq={self.backup_freq!r}."
                )
        _check_int("num_images", self.num_images, 0)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown TrainConfig fields: {unknown}. Expected: {sorted(known)}.")
        return cls(**dict(data))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        return cls.from_dict(json.loads(text))
