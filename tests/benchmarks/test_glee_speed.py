"""The speed benchmarks' own logic: official token counts, per-stage timing, and a fresh-process run on tiny."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
glee_speed = pytest.importorskip("glee_speed")


@pytest.mark.parametrize("count, tokens", [(1, 3), (80, 257), (1203, 5049), (5000, 20985)])
def test_category_names_have_the_official_token_counts(count, tokens):
    from glee_core.modeling.tokenizer import tokenize

    names = glee_speed.category_names(count)
    assert len(set(names)) == count
    assert int(tokenize(names)[1].sum()) == tokens


def test_one_setting_reports_every_stage_and_the_cache_skips_the_text_tower():
    uncached = glee_speed.run_one("tiny", "80", repeats=1, device="cpu")
    cached = glee_speed.run_one("tiny", "80-cached", repeats=1, device="cpu")
    stages = uncached["stages"]
    assert {"text encoder", "backbone", "early fusion", "encoder layers", "pixel decoder", "object decoder",
            "pre/post-processing"} <= set(stages)
    assert 0 < stages["encoder layers"] < stages["pixel decoder"] < uncached["median_s"]
    assert "text encoder" not in cached["stages"]  # encoded once, in the warm-up
    assert uncached["min_s"] <= uncached["median_s"] <= uncached["max_s"]
