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
    assert "10.0x" in out and "5.0x" in out  # 33.2 s official / 3.32 s, then / 2.0 (vs the 1-name anchor)
    assert "5.6x" in out  # like for like: the official 80-name run's anchor stages took 1.87 + 9.9 s, factor 1.80
    assert "per round (1-name factor): 2.00" in " ".join(out.split())  # the console wraps long lines


def test_rounds_adjust_each_round_by_its_own_factor(capsys):
    """Round-robin rounds: a round on a machine twice as fast gives twice the raw speed-up and twice the factor,
    so its adjusted speed-up is the same; the rows are medians over the rounds."""
    def result(round_index, setting, median, backbone):
        return {"preset": "lite-r50", "setting": setting, "device": "cpu", "threads": 2, "autocast": "none",
                "median_s": median, "min_s": median * 0.9, "max_s": median * 1.1, "peak_mb": 1000.0 + round_index,
                "stages": {"backbone": backbone, "encoder layers": 5.55 / (1 + round_index)}, "round": round_index}

    results = [result(0, "anchor", 10.0, 0.995), result(0, "80", 3.32, 0.7),   # factor 2: 33.2 / 3.32 / 2 = 5
               result(1, "anchor", 5.0, 0.4975), result(1, "80", 1.66, 0.35)]  # factor 4: 33.2 / 1.66 / 4 = 5
    rows, factors = glee_speed.combine_rounds(results)
    assert factors == {0: pytest.approx(2.0), 1: pytest.approx(4.0)}
    eighty = rows[1]
    assert eighty["setting"] == "80" and eighty["rounds"] == 2
    assert eighty["adjusted_1name"] == pytest.approx(5.0)  # whereas the pooled 2.49 s / median factor 3 gives 4.4
    assert eighty["adjusted"] == pytest.approx(5.0 * 13.09 / 11.77)  # the official 80-name run's own anchor stages
    assert eighty["median_s"] == pytest.approx((3.32 + 1.66) / 2)
    assert (eighty["min_s"], eighty["max_s"], eighty["peak_mb"]) == pytest.approx((1.494, 3.652, 1001.0))
    assert eighty["stages"]["encoder layers"] == pytest.approx((5.55 + 2.775) / 2)
    glee_speed.print_tables(results, "load average 1.00")
    out = capsys.readouterr().out
    assert "5.0x" in out and "per round (1-name factor): 2.00, 4.00" in " ".join(out.split())


@pytest.mark.parametrize("setting, paired", [("anchor", None), ("1", True)])
def test_anchor_computes_the_official_way_and_restores_the_defaults(setting, paired, monkeypatch):
    """The anchor setting, and the paired anchor passes after every timed run of a setting, run the official
    grid_sample core with the feed-forward over all tokens and the ResNet in NCHW without folded norms; gleekit's
    defaults are back afterwards."""
    from glee_core.modeling import ms_deform_attn, pixel_decoder

    seen = []

    def spy(*args):
        seen.append(pixel_decoder.FFN_BLOCK)
        return ms_deform_attn.ms_deform_attn_core_bag(*args)

    monkeypatch.setattr(ms_deform_attn, "ms_deform_attn_core_pytorch", spy)
    block = pixel_decoder.FFN_BLOCK
    result = glee_speed.run_one("tiny", setting, repeats=2, device="cpu", paired_anchor=paired)
    assert seen and set(seen) == {sys.maxsize}  # every official-kernel call saw the whole-token feed-forward
    assert ms_deform_attn.get_ms_deform_attn_kernel() is ms_deform_attn.default_ms_deform_attn_kernel
    assert pixel_decoder.FFN_BLOCK == block
    assert result["stages"]["encoder layers"] > 0
    if paired:
        assert set(result["anchor_stages"]) == {"backbone", "encoder layers"}
        assert min(result["anchor_stages"].values()) > 0
        # tiny: 2 encoder layers x (1 warm-up + 2 paired passes) official-kernel calls; the setting's own runs
        # (warm-up + 2) used the default kernel
        assert len(seen) == 2 * 3
    else:
        assert "anchor_stages" not in result


def test_paired_anchor_factor_is_used_per_result():
    def result(round_index, median, anchor_seconds):
        return {"preset": "lite-r50", "setting": "ref", "device": "cpu", "threads": 2, "autocast": "none",
                "median_s": median, "min_s": median, "max_s": median, "peak_mb": 1.0, "round": round_index,
                "stages": {"backbone": 1.0, "encoder layers": 1.0},
                "anchor_stages": {"backbone": 0.0, "encoder layers": anchor_seconds}}

    official_ref = 1.91 + 9.1  # the official referring run's backbone + encoder layers
    rows, factors = glee_speed.combine_rounds([result(0, 3.975, official_ref / 2), result(1, 5.3, official_ref / 1.5)])
    assert factors == {}  # no anchor setting: each result's own passes
    assert rows[0]["factor"] == pytest.approx(1.75)  # median of 2 and 1.5
    assert rows[0]["adjusted"] == pytest.approx(2.0)  # 15.9 / 3.975 / 2 and 15.9 / 5.3 / 1.5
    assert rows[0]["adjusted_1name"] == pytest.approx(2.0 * official_ref / 13.09)


def test_image_size_option_and_official_figures_only_for_the_official_setting(capsys):
    import argparse

    assert glee_speed.image_size("800x1333") == (800, 1333)
    for bad in ("800", "0x10", "axb"):
        with pytest.raises(argparse.ArgumentTypeError, match="HxW|positive"):
            glee_speed.image_size(bad)
    result = glee_speed.run_one("tiny", "1", repeats=1, device="cpu", image_hw=(96, 160))
    assert result["image"] == [96, 160]
    lite = {**result, "preset": "lite-r50"}
    assert glee_speed._official_key(lite) is None  # official figures: 480x640 only
    assert glee_speed._official_key({**lite, "image": [480, 640]}) == "1"
    assert glee_speed._official_key({**lite, "image": [480, 640], "device": "cuda"}) is None
    assert glee_speed.machine_factor([{**lite, "setting": "anchor"}]) is None
    glee_speed.print_tables([lite], "load average 1.00")
    assert "96x160 input" in capsys.readouterr().out


def test_gpu_check_script_parses_and_names_real_options():
    """The prepared device run (benchmarks/gpu_check.sh) is valid bash and passes glee_speed options that exist."""
    import subprocess

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    for option in ("--device cuda", "--autocast", "--image 800x1333", "--settings 80-cached 1203-cached 1203 ref"):
        assert option in text
    help_text = subprocess.run([sys.executable, str(script.parent / "glee_speed.py"), "--help"],
                               capture_output=True, text=True).stdout
    for option in ("--device", "--autocast", "--image", "--threads", "--repeats", "--settings", "--json"):
        assert option in help_text
