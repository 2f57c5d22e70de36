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


def test_machine_anchor_adjusts_the_speed_ups(capsys):
    """The ``anchor`` setting's backbone and encoder layers (computed the official way) against the official
    ones give the machine factor; the table divides the speed-ups by it. Only lite-r50 has official figures."""
    def result(setting, median, backbone, preset="lite-r50"):
        return {"preset": preset, "setting": setting, "device": "cpu", "threads": 2, "autocast": "none",
                "median_s": median, "min_s": median, "max_s": median, "peak_mb": 1000.0,
                "stages": {"backbone": backbone, "encoder layers": 5.55}}

    results = [result("anchor", 10.0, 0.995), result("80", 3.32, 0.7)]  # official 1.99 + 11.1 s
    assert glee_speed.machine_factor(results) == pytest.approx(2.0)
    assert glee_speed.machine_factor(results[1:]) is None
    assert glee_speed.machine_factor([result("anchor", 1.0, 0.5, preset="tiny")]) is None
    glee_speed.print_tables(results, "load average 1.00")
    out = capsys.readouterr().out
    assert "10.0x" in out and "5.0x" in out  # 33.2 s official / 3.32 s, then / 2.0
    assert "2.00x as fast today" in out


def test_anchor_setting_computes_the_official_way():
    from glee_core.modeling import ms_deform_attn

    try:
        anchor = glee_speed.run_one("tiny", "anchor", repeats=1, device="cpu")
        assert ms_deform_attn.get_ms_deform_attn_kernel() is ms_deform_attn.ms_deform_attn_core_pytorch
    finally:
        ms_deform_attn.set_ms_deform_attn_kernel(None)  # the benchmark runs each setting in its own process
    assert anchor["setting"] == "anchor" and anchor["stages"]["encoder layers"] > 0
