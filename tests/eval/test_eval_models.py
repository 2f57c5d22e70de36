"""Evaluation refuses models whose weights did not all load, flags them loudly when allowed, and identifies
every model by a hash of its weight files."""
from __future__ import annotations

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file

from eval.models import EvalModel, IncompleteWeightsError, load_eval_model, weights_sha256
from eval.report import INCOMPLETE_BANNER, EvalReport
from eval.runner import EvalResult
from glee_core.checkpoint import CheckpointError
from glee_core.modeling.glee import bundled_model_dir
from mllm.io import load_gleellm, resolve_model_dir


def _drop_first_key(weights_file) -> str:
    state = load_file(str(weights_file))
    dropped = sorted(state)[0]
    del state[dropped]
    save_file(state, str(weights_file))
    return dropped


@pytest.fixture()
def broken_nano(tmp_path):
    folder = tmp_path / "nano-broken"
    shutil.copytree(bundled_model_dir("nano"), folder)
    return folder, _drop_first_key(folder / "model.safetensors")


def test_complete_model_loads_with_hash():
    model = load_eval_model("nano")
    assert model.kind == "glee" and model.complete and model.load_summary == "all weights loaded"
    assert model.sha256 == weights_sha256([bundled_model_dir("nano")]) and len(model.sha256) == 64


def test_incomplete_glee_is_refused_naming_the_key_and_the_flag(broken_nano):
    folder, dropped = broken_nano
    with pytest.raises(IncompleteWeightsError, match=rf"1 missing: {dropped}.*--allow-incomplete-weights"):
        load_eval_model(folder)


def test_incomplete_glee_allowed_is_flagged_in_table_and_json(broken_nano, tmp_path):
    folder, dropped = broken_nano
    model = load_eval_model(folder, allow_incomplete=True)
    assert not model.complete and dropped in model.load_summary
    assert model.sha256 != weights_sha256([bundled_model_dir("nano")])
    report = EvalReport("toy", model, {"split": "val"}, EvalResult({"AP": 0.5}, {"images": 2}, [("AP", 0.5)]))
    assert INCOMPLETE_BANNER in report.table().title
    data = json.loads(report.write_json(tmp_path / "r.json").read_text())
    assert data["weights_complete"] is False and dropped in data["warning"] and data["metrics"] == {"AP": 0.5}
    assert data["model"]["input"]["min_size"] > 0 and data["settings"] == {"split": "val"}


def test_incomplete_gleellm_vlm_is_refused(tmp_path):
    folder = tmp_path / "tiny"
    shutil.copytree(resolve_model_dir("shapeworld-tiny"), folder)
    dropped = _drop_first_key(folder / "vlm" / "model.safetensors")
    with pytest.raises(CheckpointError, match="did not all load"):
        load_gleellm(folder)
    model = load_eval_model(folder, allow_incomplete=True)
    assert model.kind == "mllm" and not model.complete and "vlm." in model.load_summary, (dropped, model.load_summary)


def test_wrap_tells_predictors_from_gleellms():
    class Predictor:
        def predict(self, *args, **kwargs): ...

    class Chat:
        def generate(self, *args, **kwargs): ...

    assert EvalModel.wrap(Predictor()).kind == "glee" and EvalModel.wrap(Chat()).kind == "mllm"


def test_a_predictions_file_has_no_predictor_and_no_input_spec(tmp_path):
    from eval.models import EvalModel
    from eval.report import EvalReport

    path = tmp_path / "results.json"
    path.write_text("[]")
    model = EvalModel.from_predictions(path)
    assert model.predictor is None and model.kind == "predictions"
    info = EvalReport("coco", model, {}, None).model_info()
    assert "input" not in info and info["kind"] == "predictions"
