"""GleeConfig: presets, the config.json round trip, and the errors for unknown names."""
from __future__ import annotations

import json

import pytest

from glee_core.config import GleeConfig, TextConfig, get_preset, list_presets
from glee_core.processing import InputSpec

PRESET_NAMES = ["tiny", "nano", "lite-r50", "plus-swinl", "pro-eva02l"]


def test_list_presets():
    assert list_presets() == sorted(PRESET_NAMES)


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_json_round_trip(name):
    config = get_preset(name)
    text = json.dumps(config.to_dict())
    back = GleeConfig.from_dict(json.loads(text))
    assert back == config
    assert isinstance(back.text, TextConfig) and isinstance(back.input, InputSpec)
    assert isinstance(back.input.pixel_mean, tuple) and isinstance(back.input.pixel_std, tuple)
    assert back.preset == name
    assert json.dumps(back.to_dict()) == text


def test_preset_values():
    tiny = get_preset("tiny")
    assert (tiny.input.min_size, tiny.input.max_size, tiny.input.lsj) == (128, 224, False)
    assert tiny.decoder["num_queries"] == 40 and tiny.decoder["dec_layers"] == 3
    assert tiny.text.hidden_size == 32
    lite = get_preset("lite-r50")
    assert (lite.input.min_size, lite.input.max_size) == (800, 1333)
    assert lite.decoder == {"num_queries": 300, "dec_layers": 9, "dim_feedforward": 2048}
    pro = get_preset("pro-eva02l")
    assert pro.backbone == "eva02" and pro.input.lsj and pro.input.lsj_size == 1536
    assert get_preset("plus-swinl").backbone_kwargs["window_size"] == 12


def test_preset_names_are_normalised_and_fresh():
    assert get_preset("Lite_R50") == get_preset("lite-r50")
    first = get_preset("tiny")
    first.decoder["num_queries"] = 7
    assert get_preset("tiny").decoder["num_queries"] == 40


def test_unknown_preset_lists_presets():
    with pytest.raises(ValueError, match=r"unknown preset 'huge'.*lite-r50, nano, plus-swinl, pro-eva02l, tiny"):
        get_preset("huge")


def test_unknown_config_key():
    data = get_preset("tiny").to_dict()
    data["num_layers"] = 3
    with pytest.raises(ValueError, match="unknown GleeConfig keys: num_layers"):
        GleeConfig.from_dict(data)


@pytest.mark.parametrize("section, key", [("text", "width"), ("input", "min_sizes")])
def test_unknown_nested_config_key(section, key):
    data = get_preset("tiny").to_dict()
    data[section][key] = 1
    with pytest.raises(ValueError, match=rf"unknown \w+ keys: {section}\.{key}"):
        GleeConfig.from_dict(data)


def test_from_dict_does_not_modify_its_input():
    data = get_preset("tiny").to_dict()
    snapshot = json.dumps(data)
    GleeConfig.from_dict(data)
    assert json.dumps(data) == snapshot


def test_with_input():
    config = get_preset("lite-r50")
    small = config.with_input(min_size=160, max_size=224)
    assert (small.input.min_size, small.input.max_size) == (160, 224)
    assert small.input.pixel_mean == config.input.pixel_mean
    assert small.input.size_divisibility == 32
    assert (config.input.min_size, config.input.max_size) == (800, 1333)
    assert small.decoder == config.decoder and small.decoder is not config.decoder
    with pytest.raises(ValueError, match="unknown InputSpec keys: input.short_side"):
        config.with_input(short_side=10)
