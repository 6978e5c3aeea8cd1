import dataclasses
import json

import pytest

from tf_asvae import MODEL_KINDS, PRESETS, ModelConfig, build_model, preset_config
from tf_asvae.config import FlowConfig, NetworkConfig, ObjectiveConfig


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_preset_configs_round_trip_through_json(kind, preset):
    config = preset_config(kind, preset)
    assert config.kind == kind and config.preset == preset
    again = ModelConfig.from_json(config.to_json())
    assert again == config
    assert json.loads(again.to_json()) == config.to_dict()


def test_avb_drops_the_presets_posterior_flow():
    assert PRESETS["mnist"].flows.posterior_flow == "planar"
    assert PRESETS["mnist"].flows.posterior_flow_length == 80
    assert preset_config("avb", "mnist").flows.posterior_flow == "none"
    assert preset_config("vae", "mnist").flows.posterior_flow_length == 80


def test_shorthand_and_nested_overrides():
    config = preset_config("asvae", "mnist", latent_dim=8, disc_steps=3,
                           posterior_flow_length=5, disc_dropout=0.0)
    assert config.latent_dim == 8
    assert config.objective.disc_steps == 3
    assert config.flows.posterior_flow_length == 5
    assert config.network.disc_dropout == 0.0
    config = preset_config("vae", "mnist", flows=dict(posterior_flow="iaf",
                                                      posterior_flow_length=2))
    assert config.flows.posterior_flow == "iaf"


@pytest.mark.parametrize("call, match", [
    (lambda: build_model("gan", "mnist"), r"kind='gan'.*'vae'"),
    (lambda: build_model("vae", "svhn"), r"preset='svhn'.*'mnist'"),
    (lambda: build_model("vae", "mnist", latent_dim=0), r"latent_dim=0"),
    (lambda: build_model("vae", "mnist", latent_dim=-3), r"latent_dim=-3"),
    (lambda: build_model("vae", "mnist", likelihood="poisson"), r"likelihood='poisson'"),
    (lambda: build_model("vae", "mnist", colour="red"), r"colour='red'"),
    (lambda: build_model("vae", "mnist", disc_steps=0), r"disc_steps=0"),
    (lambda: build_model("vae", "mnist", posterior_flow="glow"), r"posterior_flow='glow'"),
    (lambda: build_model("asvae", "mnist", generated_x="sample"), r"generated_x='sample'"),
    (lambda: build_model("vae", "mnist", decoder_flow_length=3), r"likelihood='gaussian'"),
    (lambda: build_model("vae", "mnist", image_shape=(28, 28)), r"image_shape"),
    (lambda: build_model("vae", "mnist", activation="tanh"), r"activation='tanh'.*'relu'"),
    (lambda: build_model("avb", "mnist", flows=dict(posterior_flow="planar",
                                                     posterior_flow_length=2)),
     r"posterior_flow='planar'"),
])
def test_bad_values_raise_value_error_naming_them(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_from_dict_rejects_unknown_fields():
    data = PRESETS["mnist"].to_dict()
    data["network"]["depth"] = 3
    with pytest.raises(ValueError, match="depth"):
        ModelConfig.from_dict(data)


def test_nested_configs_are_frozen_and_validated():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["mnist"].latent_dim = 3
    with pytest.raises(ValueError, match="encoder_dropout=1.5"):
        NetworkConfig(encoder_dropout=1.5)
    with pytest.raises(ValueError, match="posterior_flow_length"):
        FlowConfig(posterior_flow="planar", posterior_flow_length=0)
    with pytest.raises(ValueError, match="ac_num_samples=1"):
        ObjectiveConfig(ac_num_samples=1)
