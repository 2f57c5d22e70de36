"""``gleekit eval ...`` end to end on fixtures in the official formats (written by the shapeworld writer): the
JSON report, submission files for splits without public ground truth, and clear errors."""
from __future__ import annotations

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from eval.predictions import check_results, load_results
from gleekit.cli import app
from glee_core.modeling.glee import bundled_model_dir
from train.data.shapeworld.export import write_shapeworld


def invoke(*args: str):
    return CliRunner().invoke(app, ["eval", *args])


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("official")
    write_shapeworld(root, "reasoning", "test", 1, seed=4, progress=False)
    write_shapeworld(root, "detection", "test", 2, seed=4, progress=False)
    write_shapeworld(root, "video", "test", 1, seed=4, progress=False)
    write_shapeworld(root / "mot", "mot", "test", 1, seed=4, progress=False)
    return root


def test_reasonseg_json_report_has_numbers_settings_and_model_identity(data_root, tmp_path):
    result = invoke("reasonseg", "--data-root", str(data_root), "--split", "test", "--limit", "2",
                    "--json-out", str(tmp_path / "r.json"))
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert set(report["metrics"]) == {f"{g} {m}" for g in ("overall", "short", "long") for m in ("gIoU", "cIoU")}
    assert report["counts"]["overall"] == 2 and report["settings"]["limit"] == 2
    assert report["settings"]["split_dir"].endswith("ReasonSeg/test") and report["weights_complete"] is True
    assert len(report["model"]["sha256"]) == 64 and report["model"]["input"]["min_size"] > 0
    assert "overall gIoU" in result.output


def test_coco_command_writes_results_plots_and_report(data_root, tmp_path):
    result = invoke("coco", "--data-root", str(data_root), "--split", "test", "--json-out", str(tmp_path / "c.json"),
                    "--predictions-out", str(tmp_path / "results.json"), "--plot-dir", str(tmp_path / "plots"))
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "c.json").read_text())
    assert {"bbox/AP", "segm/AP50"} <= set(report["metrics"]) and report["counts"]["images"] == 2
    results = load_results(tmp_path / "results.json")
    check_results(results, json.loads((data_root / "annotations" / "instances_test.json").read_text()))
    assert (tmp_path / "plots" / "per_category_ap.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "pr_curve.png").stat().st_size > 1000


def test_predictions_file_and_batched_run_score_like_one_image_at_a_time(data_root, tmp_path):
    common = ["coco", "--data-root", str(data_root), "--split", "test"]
    ran = invoke(*common, "--batch-size", "2", "--predictions-out", str(tmp_path / "results.json"),
                 "--json-out", str(tmp_path / "ran.json"))
    assert ran.exit_code == 0, ran.output
    scored = invoke(*common, "--predictions", str(tmp_path / "results.json"), "--json-out", str(tmp_path / "scored.json"))
    assert scored.exit_code == 0, scored.output
    ran_report, scored_report = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("ran", "scored"))
    assert ran_report["metrics"] == scored_report["metrics"]
    assert scored_report["model"]["kind"] == "predictions" and len(scored_report["model"]["sha256"]) == 64
    single = invoke(*common, "--json-out", str(tmp_path / "single.json"))  # batch size 1 (same-size images)
    assert single.exit_code == 0 and json.loads((tmp_path / "single.json").read_text())["metrics"] == ran_report["metrics"]
    too_many = invoke(*common, "--batch-size", "65")
    assert too_many.exit_code == 2 and "--batch-size 65: at most 64 images per model call" in too_many.output


@pytest.mark.parametrize("content, message", [
    ("[]", "contains no predictions"),
    ("{not json", "is not a JSON file"),
    ('[{"image_id": 999, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]', "image_id 999 is not one of"),
    ('[{"image_id": IMAGE, "category_id": 77, "bbox": [0, 0, 1, 1], "score": 0.5}]', "category_id 77 is not one of"),
    ('[{"image_id": IMAGE, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5, '
     '"segmentation": {"size": [3, 3], "counts": "9"}}]', "RLE size [3, 3] differs"),
])
def test_bad_predictions_files_are_named(data_root, tmp_path, content, message):
    image_id = json.loads((data_root / "annotations" / "instances_test.json").read_text())["images"][0]["id"]
    (tmp_path / "bad.json").write_text(content.replace("IMAGE", str(image_id)))
    result = invoke("coco", "--data-root", str(data_root), "--split", "test", "--predictions", str(tmp_path / "bad.json"))
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output


def test_split_without_ground_truth_still_writes_the_submission(data_root, tmp_path):
    root = tmp_path / "ytvis"
    shutil.copytree(data_root / "test", root / "valid")
    annotations = json.loads((root / "valid" / "instances.json").read_text())
    annotations["annotations"] = []  # like the official valid split: scored on the server
    (root / "valid" / "instances.json").write_text(json.dumps(annotations))
    result = invoke("ytvis", "--data-root", str(root), "--predictions-out", str(tmp_path / "submission"))
    assert result.exit_code == 2 and "cannot score" in result.output
    submitted = json.loads((tmp_path / "submission" / "results.json").read_text())
    assert isinstance(submitted, list) and all(r["video_id"] == annotations["videos"][0]["id"] for r in submitted)


def test_mot_command_scores_and_writes_sequence_files(data_root, tmp_path):
    result = invoke("mot", "--data-root", str(data_root / "mot"), "--split", "test", "--categories",
                    "circle,square,triangle,pentagon,hexagon,star,diamond,cross", "--predictions-out",
                    str(tmp_path / "mot"), "--json-out", str(tmp_path / "mot.json"))
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "mot.json").read_text())
    assert 0 <= report["metrics"]["HOTA"] <= 1 and report["counts"]["sequences"] == 1
    assert len(list((tmp_path / "mot").glob("*.txt"))) == 1


def test_missing_layout_is_a_clear_error(tmp_path):
    result = invoke("ytvis", "--data-root", str(tmp_path))
    assert result.exit_code == 2 and "tried:" in result.output and "instances.json" in result.output


def test_incomplete_weights_refused_then_flagged(data_root, tmp_path):
    folder = tmp_path / "broken"
    shutil.copytree(bundled_model_dir("nano"), folder)
    state = load_file(str(folder / "model.safetensors"))
    del state[sorted(state)[-1]]
    save_file(state, str(folder / "model.safetensors"))
    args = ["reasonseg", "--model", str(folder), "--data-root", str(data_root), "--split", "test", "--limit", "1"]
    refused = invoke(*args)
    assert refused.exit_code == 2 and "--allow-incomplete-weights" in refused.output
    allowed = invoke(*args, "--allow-incomplete-weights", "--json-out", str(tmp_path / "r.json"))
    assert allowed.exit_code == 0 and "INCOMPLETE WEIGHTS" in allowed.output
    assert json.loads((tmp_path / "r.json").read_text())["weights_complete"] is False


def test_gleellm_answers_lisas_question(data_root, tmp_path):
    result = invoke("reasonseg", "--model", "shapeworld-tiny", "--data-root", str(data_root), "--split", "test",
                    "--limit", "2", "--json-out", str(tmp_path / "m.json"))
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["model"]["kind"] == "mllm" and report["weights_complete"] is True
    assert 0 <= report["metrics"]["overall gIoU"] <= 1 and report["counts"]["overall"] == 2
