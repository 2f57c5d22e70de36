"""Checkpoints: our folder round trip, official .pth / .safetensors loading, and loud failures."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from glee_core.checkpoint import (
    CheckpointError,
    LoadReport,
    from_official_names,
    is_constant_key,
    load_weights,
    read_state_dict,
    state_for_saving,
)
from glee_core.config import GleeConfig, get_preset
from glee_core.modeling.glee import CONFIG_NAME, WEIGHTS_NAME, GleeModel
from tests.conftest import REFERENCE_DIR, require_reference
from tests.glee_core.test_model_manifest import read_manifest

CATEGORIES = ["a", "b", "c"]
UNPICKLED = []


def _record_unpickling() -> list:
    UNPICKLED.append(True)
    return UNPICKLED


class PickledObject:
    """Unpickling this runs code (``_record_unpickling``): a weights-only reader must refuse it."""

    def __reduce__(self):
        return _record_unpickling, ()


@pytest.fixture(scope="module")
def official_state() -> dict[str, torch.Tensor]:
    """The tiny oracle weights with official names (fp16/fp32, ``criterion.empty_weight`` included)."""
    require_reference()
    return load_file(str(REFERENCE_DIR / "weights.safetensors"))


@pytest.fixture(scope="module")
def random_model() -> GleeModel:
    torch.manual_seed(0)
    return GleeModel.from_config("tiny").eval()


@pytest.fixture(scope="module")
def meta_model() -> GleeModel:
    """The tiny architecture without storage: for checks that fail before any weight is copied."""
    with torch.device("meta"):
        return GleeModel(get_preset("tiny"))


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    """A random normalised 64x96 image."""
    return torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))


def _ours(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("glee."): v for k, v in official.items() if k.startswith("glee.")}


def test_save_and_load_round_trip_is_bit_identical(tmp_path, random_model, image):
    folder = random_model.save_pretrained(tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == sorted([CONFIG_NAME, WEIGHTS_NAME])
    assert GleeConfig.from_dict(json.loads((folder / CONFIG_NAME).read_text())) == random_model.config

    loaded = GleeModel.from_pretrained(folder)
    assert loaded.load_report.ok and loaded.load_report.ignored == []
    assert not loaded.training
    before, after = random_model.state_dict(), loaded.state_dict()
    assert list(after) == list(before)
    for name, tensor in before.items():
        assert after[name].dtype == tensor.dtype and torch.equal(after[name], tensor), name
    assert loaded.predictor.decoder_norm.weight is loaded.predictor.decoder.norm.weight

    with torch.no_grad():
        expected = random_model(image, categories=CATEGORIES)
        actual = loaded(image, categories=CATEGORIES)
    for field in ("pred_logits", "pred_boxes", "pred_masks", "pred_scores", "query_embeds"):
        assert torch.equal(getattr(actual, field), getattr(expected, field)), field
    assert expected.pred_logits.shape == (1, 40, 3)


def test_state_for_saving_unaliases_tied_tensors(random_model):
    state = state_for_saving(random_model)
    a, b = state["predictor.decoder_norm.weight"], state["predictor.decoder.norm.weight"]
    assert torch.equal(a, b)
    assert a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr()
    assert len({t.untyped_storage().data_ptr() for t in state.values()}) == len(state)


def test_official_pth_loads_weights_only(tmp_path, official_state):
    path = tmp_path / "glee_tiny.pth"
    torch.save({"model": dict(official_state), "iteration": 7, "__author__": "test"}, path)
    model = GleeModel.from_pretrained(path, preset="tiny")
    report = model.load_report
    assert report.ok and report.missing == [] and report.unexpected == [] and report.mismatched == []
    assert report.ignored == ["criterion.empty_weight"]
    state = model.state_dict()
    for name, tensor in _ours(official_state).items():
        assert state[name].dtype == torch.float32
        assert torch.equal(state[name], tensor.float()), name


def test_official_safetensors_loads_and_drops_criterion(official_state):
    model = GleeModel.from_pretrained(REFERENCE_DIR / "weights.safetensors", preset="tiny")
    assert model.load_report.ignored == ["criterion.empty_weight"]
    assert torch.equal(model.lang_projection, official_state["glee.lang_projection"].float())
    assert "criterion.empty_weight" not in model.state_dict()


def test_pickled_object_is_refused(tmp_path, official_state):
    path = tmp_path / "evil.pth"
    torch.save({"model": dict(official_state), "extra": PickledObject()}, path)
    with pytest.raises(CheckpointError, match="weights-only"):
        GleeModel.from_pretrained(path, preset="tiny")
    assert UNPICKLED == []


def _corrupt(official: dict[str, torch.Tensor], problem: str) -> dict[str, torch.Tensor]:
    state = dict(official)
    if problem in ("missing", "all"):
        del state["glee.pn_indicator.weight"]
    if problem in ("unexpected", "all"):
        state["glee.extra_head.weight"] = torch.zeros(2)
    if problem in ("mismatched", "all"):
        state["glee.lang_projection"] = torch.zeros(31, 256)
    return state


STRICT_MESSAGES = {
    "missing": r"1 missing: pn_indicator\.weight",
    "unexpected": r"1 unexpected: extra_head\.weight",
    "mismatched": r"1 with a different shape: lang_projection checkpoint \[31, 256\] vs model \[32, 256\]",
}


@pytest.mark.parametrize("problem", list(STRICT_MESSAGES))
def test_strict_names_every_problem(meta_model, official_state, problem):
    state, _ = from_official_names(_corrupt(official_state, problem))
    with pytest.raises(CheckpointError, match=r"^checkpoint does not match the model — " + STRICT_MESSAGES[problem]):
        load_weights(meta_model, state)


def test_non_strict_loads_what_fits_and_reports(tmp_path, official_state):
    path = tmp_path / "bad.pth"
    torch.save({"model": _corrupt(official_state, "all")}, path)
    with pytest.raises(CheckpointError, match=r"missing.*unexpected.*different shape.*strict=False"):
        GleeModel.from_pretrained(path, preset="tiny")
    model = GleeModel.from_pretrained(path, preset="tiny", strict=False)
    report = model.load_report
    assert not report.ok
    assert report.missing == ["pn_indicator.weight"]
    assert report.unexpected == ["extra_head.weight"]
    assert report.mismatched == [("lang_projection", (31, 256), (32, 256))]
    assert report.ignored == ["criterion.empty_weight"]
    assert "1 missing: pn_indicator.weight" in report.summary()
    assert model.lang_projection.shape == (32, 256)
    expected = official_state["glee.backbone.stem.conv1.weight"].float()
    assert torch.equal(model.backbone.stem.conv1.weight, expected)


def test_wrong_architecture_names_shape_mismatches(tmp_path, official_state):
    """Tiny weights in a folder whose config has a wider ResNet (width_per_group 16 instead of 8)."""
    data = get_preset("tiny").to_dict()
    data["backbone_kwargs"]["width_per_group"] = 16
    (tmp_path / CONFIG_NAME).write_text(json.dumps(data))
    save_file(_ours(official_state), str(tmp_path / WEIGHTS_NAME))
    message = (r"176 with a different shape: backbone\.res2\.0\.conv1\.norm\.bias checkpoint \[8\] vs model \[16\], "
               r".*backbone\.res2\.0\.conv1\.weight checkpoint \[8, 16, 1, 1\] vs model \[16, 16, 1, 1\].*Check the preset")
    with pytest.raises(CheckpointError, match=message):
        GleeModel.from_pretrained(tmp_path)


def test_load_report_summary_truncates_long_lists():
    report = LoadReport(missing=[f"w{i}" for i in range(10)])
    assert report.summary(limit=3) == "10 missing: w0, w1, w2, … (7 more)"
    assert LoadReport().summary() == "all weights loaded"


@pytest.mark.parametrize("preset", ["tiny", "lite-r50", "plus-swinl", "pro-eva02l"])
def test_constant_keys_are_the_manifest_constants(preset):
    manifest = read_manifest(preset)
    constants = {name for name, (_, _, kind) in manifest.items() if kind == "constant"}
    assert {name for name in manifest if is_constant_key(name)} == constants


def test_constants_are_taken_from_the_model():
    with torch.device("meta"):
        model = GleeModel(get_preset("plus-swinl"))
    state = {k: v for k, v in model.state_dict().items() if not is_constant_key(k)}
    report = load_weights(model, state)
    assert report.ok
    assert len(report.constants_from_model) == 24
    assert all(name.endswith("attn.relative_position_index") for name in report.constants_from_model)


def test_from_official_names():
    t = torch.zeros(1)
    renamed, dropped = from_official_names(
        {"glee.a.b": t, "module.glee.c": t, "criterion.empty_weight": t, "module.criterion.x": t, "other.w": t})
    assert list(renamed) == ["a.b", "c", "other.w"]
    assert dropped == ["criterion.empty_weight", "criterion.x"]


def test_read_state_dict_errors(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        read_state_dict(tmp_path / "nope.pth")
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(CheckpointError, match=r"does not hold a state dict \(name -> tensor\)"):
        read_state_dict(listed)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="is not a readable safetensors file"):
        read_state_dict(broken)
    nested = tmp_path / "nested.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, nested)
    assert torch.equal(read_state_dict(nested)["w"], torch.ones(2))


def test_from_pretrained_errors(tmp_path):
    weights = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(1)}, weights)
    with pytest.raises(CheckpointError, match=r"pass preset= \(one of lite-r50, nano, plus-swinl, pro-eva02l, tiny\)"):
        GleeModel.from_pretrained(weights)
    with pytest.raises(CheckpointError, match=r"no weights are bundled for preset 'lite-r50'.*from_config"):
        GleeModel.from_pretrained("lite-r50")
    with pytest.raises(CheckpointError, match="neither a model folder, a checkpoint file nor a preset name"):
        GleeModel.from_pretrained(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="not a gleekit model folder: it needs config.json and model.safetensors"):
        GleeModel.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        GleeModel.from_pretrained(weights, preset="huge")


def test_from_pretrained_dtype(official_state):
    model = GleeModel.from_pretrained(REFERENCE_DIR / "weights.safetensors", preset="tiny", dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    expected = official_state["glee.lang_projection"].to(torch.bfloat16)
    assert torch.equal(model.lang_projection, expected)


def test_folder_with_a_contradicting_preset_is_refused(tmp_path):
    GleeModel.from_config("tiny").save_pretrained(tmp_path / "m")
    with pytest.raises(CheckpointError, match="holds a tiny model, not 'lite-r50'"):
        GleeModel.from_pretrained(tmp_path / "m", preset="lite-r50")
    assert GleeModel.from_pretrained(tmp_path / "m", preset="tiny").config.preset == "tiny"
