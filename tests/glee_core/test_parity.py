"""The acceptance core: ``python -m glee_core.parity`` against the official-code fixtures."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from glee_core.parity import run_parity
from tests.conftest import CASES_DIR, REAL_CASES_DIR, REFERENCE_DIR, REPO_ROOT, require_reference, seeded_weights_path

SUMMARY = re.compile(r"^max_abs_diff=(\S+) cases=(\d+) failed=(\d+)$", re.M)


def _summary(text: str) -> tuple[float, int, int]:
    match = SUMMARY.search(text)
    assert match, f"no summary line in output:\n{text[-2000:]}"
    return float(match.group(1)), int(match.group(2)), int(match.group(3))


def test_tiny_cases_pass_through_the_cli():
    require_reference()
    proc = subprocess.run([sys.executable, "-m", "glee_core.parity", str(REFERENCE_DIR / "weights.safetensors"),
                           str(CASES_DIR)], capture_output=True, text=True, cwd=REPO_ROOT, timeout=900)
    diff, cases, failed = _summary(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert cases == len(list(CASES_DIR.glob("*/case.json"))) == 8
    assert failed == 0 and diff < 1e-3
    for name in ("out.pred_logits", "decoder.proposal_index", "post.masks.0", "track.match_indices.1", "vp.ref_feats"):
        assert name in proc.stdout


@pytest.mark.parametrize("preset", ["lite-r50", "plus-swinl", "pro-eva02l"])
def test_real_size_cases(preset, capsys):
    """ResNet-50 / Swin-L / EVA02-L at real sizes with the name-seeded weights; other presets' cases are skipped."""
    require_reference()
    status = run_parity(seeded_weights_path(preset), REAL_CASES_DIR, quiet=True)
    out = capsys.readouterr().out
    diff, cases, failed = _summary(out)
    assert (status, cases, failed) == (0, 2, 0), out
    assert diff < 1e-2  # largest values are boxes in pixels; relative error stays below 1e-4
    assert out.count("skipped") == 4


def _copy_case(tmp_path, name="a_category_det"):
    require_reference()
    target = tmp_path / name
    shutil.copytree(CASES_DIR / name, target)
    return target


def test_a_perturbed_fixture_fails(tmp_path, capsys):
    case = _copy_case(tmp_path)
    tensors = load_file(str(case / "tensors.safetensors"))
    tensors["decoder.logits"] = tensors["decoder.logits"] + 1e-3
    save_file(tensors, str(case / "tensors.safetensors"))
    assert run_parity(REFERENCE_DIR / "weights.safetensors", tmp_path) == 1
    out = capsys.readouterr().out
    assert _summary(out)[1:] == (1, 1)
    assert re.search(r"decoder\.logits\s+│\s+0\.001\s+│ NO", out)


def test_other_weights_are_skipped_not_compared(tmp_path, capsys):
    _copy_case(tmp_path)
    state = load_file(str(REFERENCE_DIR / "weights.safetensors"))
    state["glee.lang_projection"] = state["glee.lang_projection"] * 2
    save_file(state, str(tmp_path / "other.safetensors"))
    assert run_parity(tmp_path / "other.safetensors", tmp_path) == 2
    assert "skipped a_category_det: made with other weights" in capsys.readouterr().out


def test_unseen_case_directory_of_the_same_format(tmp_path, capsys):
    """A case directory the checker has never seen (renamed copy), found by its case.json alone."""
    case = _copy_case(tmp_path, "g_batch2")
    meta = json.loads((case / "case.json").read_text())
    meta["name"] = "my_new_case"
    (case / "case.json").write_text(json.dumps(meta))
    assert run_parity(REFERENCE_DIR / "weights.safetensors", case) == 0
    assert "my_new_case: ok" in capsys.readouterr().out


def test_empty_cases_dir(tmp_path, capsys):
    require_reference()
    assert run_parity(REFERENCE_DIR / "weights.safetensors", tmp_path) == 2
    assert "no case directories" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tiny_cases_on_cuda(capsys):
    require_reference()
    status = run_parity(REFERENCE_DIR / "weights.safetensors", CASES_DIR, quiet=True, device="cuda")
    assert status == 0, capsys.readouterr().out
