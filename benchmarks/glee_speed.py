"""GLEE latency per image, stage by stage, in the settings of the official CPU measurements.

    python benchmarks/glee_speed.py [--preset lite-r50] [--settings 1 80 1203 ref 80-cached 1203-cached anchor]
                                    [--repeats 5] [--rounds 1] [--threads 2] [--device cpu] [--autocast bf16]
                                    [--image 480x640] [--json FILE]

Random weights, a 480x640 RGB image (``--image``) resized by the official test path (800x1067 for lite-r50), fp32,
eval mode. Every setting runs in a fresh process: one warm-up, then ``--repeats`` timed runs of
``GleePredictor.predict`` (pre- and post-processing included); median / min / max seconds, the process's
peak RSS, and the per-stage medians from forward hooks, printed beside the official GLEE's figures
(``shared/reference/glee/official_cpu_bench.md``, same machine kind, same settings). ``--rounds R`` runs the
whole list R times round-robin and prints medians over the rounds.

Settings: ``N`` = N category names with the official token counts (1 name = 3 tokens, 80 = 257,
1,203 = 5,049; other N scaled like LVIS), text encoded on every call (the cache is off);
``N-cached`` = the same with the vocabulary cache warm (the text tower runs in the warm-up only);
``ref`` = one 8-word referring expression. Machine anchor: these machines drift by 2x from day to day and by
~20 % within minutes, so after every timed run each setting also times its image's two costliest stages computed
as the official code computes them (ResNet in NCHW layout with each frozen batch norm a pass of its own,
deformable attention by the official ``grid_sample`` core, the encoder feed-forward over all tokens at once):
the official run's time for the same stages in the same setting / that time is the setting's machine factor (> 1:
faster than at the official measurement; like for like, as the official machine drifted between settings too: its
encoder layers took 9.1 s in the referring run, 11.1 s in the 1-name run), and the speed-ups are also printed
divided by it ("machine-adjusted"), and divided by the factor against the official 1-name run's stages ("vs 1-name
anchor"). The setting ``anchor`` (1 name, the whole prediction computed that way; not in the default list) gives
one factor for its round instead. The peak RSS is taken before the first anchor pass. The anchor's
frozen batch norm is one fused multiply-add where the official code makes two passes (and its ReLUs run in
place), so the factor errs slightly high and the adjusted speed-ups slightly low. The official figures are shown
for lite-r50 on the CPU at 480x640 only. On CUDA the stage timer synchronises at every hook (``--image 800x1333``
gives the GPU setting of issue 12: 800x1333 after the resize).
"""
from __future__ import annotations

import argparse
import json
from contextlib import ExitStack, contextmanager
import os
import resource
import statistics
import subprocess
import sys
import time
from collections import defaultdict

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

IMAGE_HW = (480, 640)
EXPRESSION = "the small red car parked on the left"
OFFICIAL_TOKENS = {1: 3, 80: 257, 1203: 5049}
# official GLEE-Lite, 2 threads: median s, min, max, peak RSS MB, and per-stage medians (s)
OFFICIAL = {
    "1": (19.4, 18.7, 20.0, 3457, {"text encoder": 0.12, "distillation teacher": 0.09, "backbone": 1.99,
                                   "early fusion": 1.25, "encoder layers": 11.1, "pixel decoder": 13.6,
                                   "object decoder": 0.97, "pre/post-processing": 0.75}),
    "80": (33.2, 29.6, 36.5, 3575, {"text encoder": 6.29, "distillation teacher": 5.80, "backbone": 1.87,
                                    "early fusion": 3.20, "encoder layers": 9.9, "pixel decoder": 13.7,
                                    "object decoder": 0.85, "pre/post-processing": 0.76}),
    "1203": (287.5, 258.4, 305.6, 13967, {"text encoder": 111.0, "distillation teacher": 112.8, "backbone": 1.72,
                                          "early fusion": 43.9, "encoder layers": 10.3, "pixel decoder": 54.6,
                                          "object decoder": 1.41, "pre/post-processing": 0.32}),
    "ref": (15.9, 15.8, 20.1, 2936, {"text encoder": 0.09, "backbone": 1.91, "early fusion": 1.64,
                                     "encoder layers": 9.1, "pixel decoder": 11.7, "object decoder": 0.91,
                                     "pre/post-processing": 0.0}),
}
ANCHOR_STAGES = ("backbone", "encoder layers")  # the stages the machine anchor computes the official way
STAGES = ("text encoder", "distillation teacher", "backbone", "early fusion", "encoder layers", "pixel decoder",
          "object decoder", "pre/post-processing")


def category_names(count: int) -> list[str]:
    """``count`` distinct names of 1-3 single-token CLIP words whose total token count (BOS/EOS included)
    is the official one for 1 / 80 / 1,203 names, and LVIS's 4.2 tokens per name otherwise."""
    from glee_core.modeling.tokenizer import load_clip_tokenizer

    if count == 1:
        return ["person"]
    target = OFFICIAL_TOKENS.get(count, round(count * OFFICIAL_TOKENS[1203] / 1203))
    tokenizer = load_clip_tokenizer()
    candidates = sorted(w[:-4] for w in tokenizer.get_vocab() if w.endswith("</w>") and w[:-4].isalpha() and len(w) >= 7)
    words = [w for w, ids in zip(candidates, tokenizer(candidates)["input_ids"]) if len(ids) == 3]
    rng = np.random.default_rng(0)
    word_tokens = target - 2 * count
    lengths = np.ones(count, dtype=int)
    extra = word_tokens - count  # spread the remaining words over the names, at most 3 words each
    for i in rng.permutation(count).tolist() * 2:
        if extra == 0:
            break
        lengths[i] += 1
        extra -= 1
    picks = iter(rng.permutation(len(words)).tolist())
    return [" ".join(words[next(picks)] for _ in range(n)) for n in lengths]


class StageTimer:
    """Wall time per stage from forward pre/post hooks, summed per run."""

    def __init__(self, model, synchronize: bool = False) -> None:
        """``synchronize``: wait for the CUDA device at every hook (its kernels run asynchronously)."""
        from glee_core.modeling.early_fusion import VLFuse
        from glee_core.modeling.pixel_decoder import DeformableEncoderLayer

        self.synchronize = synchronize
        self.totals: dict[str, float] = defaultdict(float)
        self._starts: dict[int, float] = {}
        named = {"text encoder": [model.text_encoder], "backbone": [model.backbone],
                 "pixel decoder": [model.pixel_decoder], "object decoder": [model.predictor], "model": [model],
                 "early fusion": [m for m in model.modules() if isinstance(m, VLFuse)],
                 "encoder layers": [m for m in model.modules() if isinstance(m, DeformableEncoderLayer)]}
        if hasattr(model, "text_encoder_teacher"):
            named["distillation teacher"] = [model.text_encoder_teacher]
        for stage, modules in named.items():
            for module in modules:
                module.register_forward_pre_hook(self._start)
                module.register_forward_hook(lambda m, i, o, stage=stage: self._stop(m, stage))

    def _now(self) -> float:
        if self.synchronize:
            torch.cuda.synchronize()
        return time.perf_counter()

    def _start(self, module, inputs) -> None:
        self._starts[id(module)] = self._now()

    def _stop(self, module, stage: str) -> None:
        self.totals[stage] += self._now() - self._starts.pop(id(module))

    def take(self, wall: float) -> dict[str, float]:
        stages = dict(self.totals)
        stages["pre/post-processing"] = wall - stages.pop("model", 0.0)
        self.totals.clear()
        return stages


AUTOCAST = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@contextmanager
def official_way(model):
    """Within: the anchor stages computed as the official code computes them (ResNet in NCHW layout with each
    frozen batch norm a pass of its own, deformable attention by the ``grid_sample`` core, the encoder
    feed-forward over all tokens at once); gleekit's defaults again after."""
    from glee_core.modeling import pixel_decoder
    from glee_core.modeling.layers import set_norm_folding
    from glee_core.modeling.ms_deform_attn import ms_deform_attn_core_pytorch, set_ms_deform_attn_kernel

    layout, block = model.backbone.channels_last, pixel_decoder.FFN_BLOCK
    model.backbone.channels_last, pixel_decoder.FFN_BLOCK = False, sys.maxsize
    set_norm_folding(model.backbone, False)
    set_ms_deform_attn_kernel(ms_deform_attn_core_pytorch)
    try:
        yield
    finally:
        model.backbone.channels_last, pixel_decoder.FFN_BLOCK = layout, block
        set_norm_folding(model.backbone, True)
        set_ms_deform_attn_kernel(None)


def run_one(preset: str, setting: str, repeats: int, device: str, autocast: str = "none",
            image_hw: tuple[int, int] = IMAGE_HW, paired_anchor: bool | None = None) -> dict:
    """Time one setting in this process; returns medians, min, max, peak RSS and per-stage medians.

    ``paired_anchor`` (default: where official figures exist, i.e. lite-r50 on the CPU at 480x640): after each
    timed run, also time the anchor stages computed the official way (backbone and pixel decoder of the same
    image, no prompt) and return their medians as ``anchor_stages``: the machine's speed measured at the same
    moments as the setting.
    """
    from glee_core import processing
    from glee_core.config import get_preset
    from glee_core.modeling.glee import GleeModel
    from glee_core.predictor import GleePredictor
    from glee_core.structures import Categories, Expression
    from glee_core.vocabulary import VocabularyCache

    torch.manual_seed(0)
    model = GleeModel.from_config(get_preset(preset)).eval()
    predictor = GleePredictor(model, device=device, autocast=AUTOCAST[autocast])
    image = np.random.default_rng(0).integers(0, 255, (*image_hw, 3), dtype=np.uint8)
    cached = setting.endswith("-cached")
    if paired_anchor is None:
        paired_anchor = setting != "anchor" and official_setup(preset, device, image_hw)
    stack = ExitStack()
    if setting == "anchor":
        stack.enter_context(official_way(model))
    if setting == "ref":
        prompt = Expression(EXPRESSION)
    else:
        prompt = Categories(category_names(int(prompt_of(setting))))
    if not cached:
        model.vocabularies = VocabularyCache(max_entries=0)
    timer = StageTimer(model, synchronize=device.startswith("cuda"))
    anchor_input = processing.preprocess([image], predictor.spec, device=model.device).tensor

    def anchor_pass() -> None:
        with official_way(model), torch.inference_mode():
            model.pixel_decoder(model.backbone(anchor_input))

    def peak_mb() -> float:
        return (torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda")
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)

    with stack:
        predictor.predict(image, prompt, topk=10)  # warm-up (and, cached, the one text encoding)
        timer.take(0.0)
        times, stages, anchor_stages = [], defaultdict(list), defaultdict(list)
        for run in range(repeats):
            start = time.perf_counter()
            predictor.predict(image, prompt, topk=10)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
            for stage, seconds in timer.take(times[-1]).items():
                stages[stage].append(seconds)
            if paired_anchor:
                if run == 0:
                    peak = peak_mb()  # the setting's own peak, before the official way's larger temporaries
                    anchor_pass()  # its warm-up
                    timer.take(0.0)
                anchor_pass()
                for stage, seconds in timer.take(0.0).items():
                    anchor_stages[stage].append(seconds)
    if not paired_anchor:
        peak = peak_mb()
    result = {"preset": preset, "setting": setting, "threads": torch.get_num_threads(), "device": device,
              "autocast": autocast, "image": list(image_hw),
              "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "peak_mb": peak,
              "runs": len(times), "stages": {k: statistics.median(v) for k, v in stages.items()}}
    if paired_anchor:
        result["anchor_stages"] = {s: statistics.median(anchor_stages[s]) for s in ANCHOR_STAGES}
    return result


def run_settings(preset: str, settings: list[str], repeats: int, threads: int, device: str,
                 autocast: str = "none", image_hw: tuple[int, int] = IMAGE_HW, rounds: int = 1) -> list[dict]:
    """:func:`run_one` for every setting, each in a fresh process (so peak RSS is the setting's own); with
    ``rounds`` > 1 the whole list again, round after round (``result["round"]``)."""
    results = []
    for round_index, setting in ((k, s) for k in range(rounds) for s in settings):
        command = [sys.executable, __file__, "--run-one", setting, "--preset", preset, "--repeats", str(repeats),
                   "--threads", str(threads), "--device", device, "--autocast", autocast,
                   "--image", f"{image_hw[0]}x{image_hw[1]}"]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"setting {setting} failed:\n{done.stderr[-3000:]}")
        results.append({**json.loads(done.stdout.strip().splitlines()[-1]), "round": round_index})
        print(f"round {round_index + 1}/{rounds}, {setting}: {results[-1]['median_s']:.2f} s", file=sys.stderr)
    return results


def image_size(text: str) -> tuple[int, int]:
    """``"HxW"`` -> (H, W), both positive."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 480x640, got {text!r}") from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"image sides must be positive, got {text!r}")
    return height, width


def load_average() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def prompt_of(setting: str) -> str:
    """The prompt a setting times: ``ref`` or a count of names (``anchor`` is 1 name, ``N-cached`` N)."""
    return "1" if setting == "anchor" else setting.removesuffix("-cached")


def official_setup(preset: str, device: str, image_hw) -> bool:
    """Whether official figures exist for this setup: they measured GLEE-Lite (lite-r50) on the CPU with a
    480x640 image only."""
    return (preset, device, tuple(image_hw)) == ("lite-r50", "cpu", IMAGE_HW)


def _official_key(result: dict) -> str | None:
    """The key of the official figures for ``result``'s setting (None where :func:`official_setup` is false)."""
    key = prompt_of(result["setting"])
    same = official_setup(result["preset"], result["device"], result.get("image", IMAGE_HW))
    return key if same and key in OFFICIAL else None



def _anchor_seconds(result: dict) -> float | None:
    """Seconds of the anchor stages computed the official way in ``result``'s process: its paired anchor passes,
    or, for the ``anchor`` setting, its own stages; None otherwise."""
    stages = result.get("anchor_stages") or (result["stages"] if result["setting"] == "anchor" else None)
    return None if stages is None else sum(stages[s] for s in ANCHOR_STAGES)


def _official_anchor_seconds(result: dict, own: bool) -> float:
    """The official measurement's seconds of the anchor stages in ``result``'s own setting (``own``) or in the
    1-name setting. Their machine drifted between settings too: the same encoder layers took 9.1 s in the
    referring run and 11.1 s in the 1-name run."""
    key = _official_key(result) if own else "1"
    return sum(OFFICIAL[key][4][s] for s in ANCHOR_STAGES)


def machine_factor(results: list[dict]) -> float | None:
    """Official 1-name anchor seconds / the ``anchor`` setting's among ``results`` (one round); None without it
    or without official figures (> 1: this machine is faster today than at the official measurement)."""
    anchor = next((r for r in results if r["setting"] == "anchor"), None)
    if anchor is None or _official_key(anchor) is None:
        return None
    return _official_anchor_seconds(anchor, own=False) / _anchor_seconds(anchor)


def combine_rounds(results: list[dict]) -> tuple[list[dict], dict[int, float]]:
    """Per-setting rows over the rounds (``result["round"]``, 0 when absent), and each round's ``anchor`` factor.

    A row holds the median over rounds of the rounds' medians (and of each stage) and the overall min / max /
    peak. Where official figures exist it also holds, as medians over rounds: ``factor`` = the official
    setting's own anchor-stage seconds / ours (like for like: both machines' speed at the moments of their
    measurements; ours from the setting's paired anchor passes, else from its round's ``anchor`` setting),
    ``adjusted`` = official / median / factor, and ``adjusted_1name``, the same against the official 1-name
    run's anchor stages for every setting (None without official figures or any anchor).
    """
    rounds = sorted({r.get("round", 0) for r in results})
    round_anchor = {k: _anchor_seconds(r) for r in results if r["setting"] == "anchor" for k in [r.get("round", 0)]}
    rows = []
    for setting in dict.fromkeys(r["setting"] for r in results):
        runs = [r for r in results if r["setting"] == setting]
        official = OFFICIAL.get(_official_key(runs[0]) or "")
        measured = [(r, _anchor_seconds(r) or round_anchor.get(r.get("round", 0))) for r in runs]
        measured = [(r, seconds) for r, seconds in measured if seconds and official]

        def median_over(value) -> float | None:
            return statistics.median(value(r, seconds) for r, seconds in measured) if measured else None

        stages = {stage: statistics.median(r["stages"][stage] for r in runs if stage in r["stages"])
                  for stage in dict.fromkeys(k for r in runs for k in r["stages"])}
        rows.append({**runs[0], "median_s": statistics.median(r["median_s"] for r in runs),
                     "min_s": min(r["min_s"] for r in runs), "max_s": max(r["max_s"] for r in runs),
                     "peak_mb": max(r["peak_mb"] for r in runs), "stages": stages, "rounds": len(runs),
                     "factor": median_over(lambda r, sec: _official_anchor_seconds(r, own=True) / sec),
                     "adjusted": median_over(
                         lambda r, sec: official[0] / r["median_s"] * sec / _official_anchor_seconds(r, own=True)),
                     "adjusted_1name": median_over(
                         lambda r, sec: official[0] / r["median_s"] * sec / _official_anchor_seconds(r, own=False))})
    factors = {k: f for k in rounds if (f := machine_factor([r for r in results if r.get("round", 0) == k]))}
    return rows, factors


def print_tables(results: list[dict], load: str) -> None:
    console = Console(width=160)
    results, factors = combine_rounds(results)
    height, width = results[0].get("image", IMAGE_HW)
    table = Table(title=f"GleePredictor, {results[0]['preset']}, random weights, {height}x{width} input, "
                        f"{results[0]['device']}, {results[0]['threads']} threads, autocast {results[0]['autocast']} ({load})")
    for column in ("setting", "median s", "min s", "max s", "peak RSS MB", "official median s",
                   "official peak MB", "speed-up", "machine factor", "machine-adjusted", "vs 1-name anchor"):
        table.add_column(column, justify="right")
    for r in results:
        official = OFFICIAL.get(_official_key(r) or "")
        table.add_row(r["setting"], f"{r['median_s']:.2f}", f"{r['min_s']:.2f}", f"{r['max_s']:.2f}",
                      f"{r['peak_mb']:,.0f}", f"{official[0]:.1f}" if official else "-",
                      f"{official[3]:,}" if official else "-",
                      f"{official[0] / r['median_s']:.1f}x" if official else "-",
                      f"{r['factor']:.2f}" if r["factor"] else "-",
                      f"{r['adjusted']:.1f}x" if r["adjusted"] else "-",
                      f"{r['adjusted_1name']:.1f}x" if r["adjusted_1name"] else "-")
    console.print(table)
    if any(r["factor"] for r in results):
        console.print(f"machine factor: the official run's {' + '.join(ANCHOR_STAGES)} seconds in the same setting "
                      "over this machine's for the same stages computed the official way (paired anchor passes after "
                      "every timed run, else the round's anchor setting); > 1: this machine is faster. "
                      "'machine-adjusted' divides the speed-up by it; 'vs 1-name anchor' divides by the factor "
                      "against the official 1-name run's stages instead (their machine drifted between settings)"
                      + (". Anchor setting per round (1-name factor): "
                         + ", ".join(f"{f:.2f}" for f in factors.values()) if factors else ""))
    stages = Table(title="per-stage medians, s (official in brackets)")
    stages.add_column("stage")
    for r in results:
        stages.add_column(r["setting"], justify="right")
    for stage in STAGES:
        cells = []
        for r in results:
            official = OFFICIAL.get(_official_key(r) or "")
            ours = r["stages"].get(stage)
            theirs = official[4].get(stage) if official else None
            cells.append(("-" if ours is None else f"{ours:.2f}") + ("" if theirs is None else f" [{theirs:.2f}]"))
        stages.add_row(stage, *cells)
    console.print(stages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="lite-r50")
    parser.add_argument("--settings", nargs="+",
                        default=["1", "80", "1203", "ref", "80-cached", "1203-cached"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--autocast", choices=sorted(AUTOCAST), default="none",
                        help="run the forward under autocast (opt-in; changes outputs slightly)")
    parser.add_argument("--image", type=image_size, default=IMAGE_HW, metavar="HxW",
                        help="input image size before the official resize (default 480x640, the official setting)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the settings this many times round-robin; the table shows medians over rounds")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.run_one:
        print(json.dumps(run_one(args.preset, args.run_one, args.repeats, args.device, args.autocast, args.image)))
        return
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    results = run_settings(args.preset, args.settings, args.repeats, args.threads, args.device, args.autocast,
                           args.image, args.rounds)
    load = load_average()
    print_tables(results, load)
    if args.json:
        rows, factors = combine_rounds(results)
        with open(args.json, "w") as handle:
            json.dump({"load": load, "machine_factors": factors, "combined": rows, "results": results}, handle,
                      indent=2)


if __name__ == "__main__":
    main()
