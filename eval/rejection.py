"""Fit and measure the calibrated "no such object" decision (:mod:`glee_core.rejection`).

Samples are prompts with the model's default prediction for them, labelled by whether what they describe is in
the image:

* shapeworld, ``prompt="referring"`` (:class:`ShapeworldRejectionBenchmark`): per scene, up to ``per_scene``
  positive expressions — the first is the one ``gleekit eval shapeworld`` draws for the scene, further ones are
  drawn from the scene's other unique expressions — and up to ``per_scene`` negatives from
  :func:`train.data.shapeworld.referring.negative_expressions` (same grammar, matching no object, mostly hard).
* shapeworld, ``prompt="category"``: per scene, up to ``per_scene`` shape names present in the scene and up to
  ``per_scene`` absent ones, each prompted alone (``Categories([name])``).
* a user's labelled set in the refer layout (:class:`ReferRejectionBenchmark`, read with
  :func:`train.data.readers.read_refer`): every sentence is a positive; negatives come from a JSON list of
  ``{"image_id": int, "sentence": str}`` (expressions checked by a person to describe nothing in that image) or,
  without one, from sentences of *other* images (one per positive, never one of the image's own sentences).
  Borrowed negatives are noisy — another image's "the man on the left" may well fit this image too — which makes
  the calibration reject more than it should; prefer a checked list.

Label (the calibrator's ``target``): ``"exists"`` (default) — 1 for every positive, so the probability estimates
"an object matching the prompt is in the image"; ``"correct"`` — 1 only for positives whose predicted box has IoU
>= 0.5 with the described object, so it estimates "the returned box is the right answer" (a wrong box is then
something to reject too).

Metrics (:func:`rejection_result`), with ``p`` the calibrated probability and accept = ``p >= threshold``:

* negatives rejected: the share of negatives not accepted (per negative reason too);
* positives accepted: the share of positives accepted;
* Acc@0.5 after rejection: the share of positives accepted *and* whose box has IoU >= 0.5 with the described object
  (a rejected positive is a miss); Acc@0.5 without rejection: the plain referring accuracy of the same positives
  (category prompts: IoU with the best-matching object of the category);
* AUROC of ``p``, positives against negatives, and against the calibrator's own labels when ``target`` is
  "correct" (ties count one half);
* Brier score and ECE (10 equal-width bins) of ``p`` against the calibrator's labels: how well calibrated it is.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eval.models import EvalModel
from eval.runner import Benchmark, EvalResult
from glee_core.json_file import read_json
from glee_core.mask_ops import box_iou
from glee_core.rejection import PROMPTS, TARGETS, RejectionCalibrator, prediction_features
from glee_core.structures import Categories, Expression

HIT_IOU = 0.5
ECE_BINS = 10


@dataclass
class RejectionSample:
    """One prompt: its text, whether what it describes is in the image, the IoU of the predicted box with the
    described object (0 for negatives or no box), the prediction's features and the sample's kind (positives: the
    expression kind or "category"; negatives: why nothing matches)."""

    text: str
    positive: bool
    box_iou: float
    features: list[float]
    reason: str


def _sample(detections: Any, text: str, truth: np.ndarray | None, reason: str, label: int | None = None) -> RejectionSample:
    """``truth``: boxes [M, 4] of the objects the prompt describes (None: a negative)."""
    iou = 0.0
    if truth is not None and len(detections) and len(truth):
        rows = np.flatnonzero(detections.labels == label) if label is not None else np.arange(len(detections))
        if len(rows):
            best = rows[np.argmax(detections.scores[rows])]
            iou = float(box_iou(detections.boxes[best][None].astype(np.float32), truth.astype(np.float32)).max())
    return RejectionSample(text, truth is not None, iou, prediction_features(detections, label).tolist(), reason)


def sample_labels(samples: list[RejectionSample], target: str) -> np.ndarray:
    """The calibrator's labels (module docstring): ``"exists"`` positives, ``"correct"`` positives hit at IoU 0.5."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    positive = np.array([s.positive for s in samples], bool)
    if target == "exists":
        return positive.astype(np.int64)
    return (positive & np.array([s.box_iou >= HIT_IOU for s in samples], bool)).astype(np.int64)


def fit_calibrator(samples: list[RejectionSample], *, target: str = "exists", target_rejection: float | None = None,
                   prompt: str = "referring", model: EvalModel | None = None,
                   data: dict[str, Any] | None = None) -> RejectionCalibrator:
    """Fit a :class:`RejectionCalibrator` on ``samples`` (labels by ``target``), recording ``model``'s identity and
    ``data`` (where the samples came from) in the file."""
    features = np.array([s.features for s in samples], np.float64).reshape(-1, 2)
    return RejectionCalibrator.fit(
        features, sample_labels(samples, target), target_rejection=target_rejection, prompt=prompt, target=target,
        model="" if model is None else model.source, model_sha256="" if model is None else model.sha256,
        summary={"data": data or {}})


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney; ties count one half); NaN without both classes."""
    from scipy.stats import rankdata

    labels = np.asarray(labels).astype(bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, np.float64))
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Σ_bins (share of samples) · |mean probability - share of label 1| over ``bins`` equal-width bins."""
    which = np.minimum((probabilities * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.mean() * abs(probabilities[inside].mean() - labels[inside].mean())
    return float(total)


def rejection_result(samples: list[RejectionSample], calibrator: RejectionCalibrator) -> EvalResult:
    """The module docstring's metrics of ``calibrator`` on ``samples``."""
    if not samples:
        raise ValueError("no samples to score")
    p = calibrator.probabilities(np.array([s.features for s in samples], np.float64).reshape(-1, 2))
    accepted = p >= calibrator.threshold
    positive = np.array([s.positive for s in samples], bool)
    hit = np.array([s.box_iou >= HIT_IOU for s in samples], bool)
    labels = sample_labels(samples, calibrator.target)
    nan = float("nan")

    def share(values: np.ndarray) -> float:
        return float(values.mean()) if len(values) else nan

    metrics = {
        "negatives rejected": share(~accepted[~positive]),
        "positives accepted": share(accepted[positive]),
        "Acc@0.5 after rejection": share(accepted[positive] & hit[positive]),
        "Acc@0.5 without rejection": share(hit[positive]),
        "AUROC (present vs absent)": auroc(p, positive),
    }
    if calibrator.target == "correct":
        metrics["AUROC (right box vs rest)"] = auroc(p, labels)
    metrics["Brier score"] = float(np.mean((p - labels) ** 2))
    metrics["ECE"] = expected_calibration_error(p, labels)
    reasons = sorted({s.reason for s in samples if not s.positive})
    for reason in reasons:
        rows = np.array([not s.positive and s.reason == reason for s in samples], bool)
        metrics[f"negatives rejected ({reason})"] = share(~accepted[rows])
    counts = {"positives": int(positive.sum()), "negatives": int((~positive).sum())}
    counts.update({f"negatives ({reason})": sum(not s.positive and s.reason == reason for s in samples)
                   for reason in reasons})
    return EvalResult(metrics=metrics, counts=counts, rows=list(metrics.items()))


class _RejectionBenchmark(Benchmark):
    """Records are lists of :class:`RejectionSample`; scoring needs a ``calibrator``."""

    calibrator: RejectionCalibrator | None = None

    def score(self, records: list[list[RejectionSample]]) -> EvalResult:
        if self.calibrator is None:
            raise ValueError("scoring rejection needs a calibration (fit one with gleekit eval calibrate-refer)")
        return rejection_result([s for record in records for s in record], self.calibrator)

    def _calibration_settings(self) -> dict[str, Any]:
        if self.calibrator is None:
            return {}
        c = self.calibrator
        return {"calibration": {"model": c.model, "model_sha256": c.model_sha256, "prompt": c.prompt,
                                "target": c.target, "threshold": c.threshold, "threshold_rule": c.threshold_rule}}


class ShapeworldRejectionBenchmark(_RejectionBenchmark):
    """``num_scenes`` fresh scenes of ``split`` under ``seed``; per scene up to ``per_scene`` positives and
    ``per_scene`` negatives of ``prompt`` (module docstring)."""

    def __init__(self, num_scenes: int = 150, *, split: str = "val", seed: int = 0, per_scene: int = 2,
                 prompt: str = "referring", calibrator: RejectionCalibrator | None = None):
        if num_scenes < 1:
            raise ValueError(f"num_scenes must be >= 1, got {num_scenes}")
        if per_scene < 1:
            raise ValueError(f"per_scene must be >= 1, got {per_scene}")
        if prompt not in PROMPTS:
            raise ValueError(f"prompt must be one of {PROMPTS}, got {prompt!r}")
        self.num_scenes, self.split, self.seed, self.per_scene = num_scenes, split, seed, per_scene
        self.prompt, self.calibrator = prompt, calibrator
        self.name = f"shapeworld {split} rejection ({prompt})"

    def __len__(self) -> int:
        return self.num_scenes

    def run_sample(self, model: EvalModel, index: int) -> list[RejectionSample]:
        from train.data.shapeworld import generate_scene, referring_expressions, scene_seed

        scene = generate_scene(scene_seed(self.split, index, self.seed), split=self.split)
        if self.prompt == "category":
            return self._categories(model, scene)
        from train.data.shapeworld.referring import negative_expressions

        predictor = model.predictor
        rng = np.random.default_rng([scene.seed, 7])  # the first draw is eval/shapeworld.py's expression
        expressions = referring_expressions(scene, rng)
        positives = []
        if expressions:
            first = int(rng.integers(len(expressions)))
            others = [e for i, e in enumerate(expressions) if i != first]
            positives = [expressions[first]] + [others[i] for i in rng.permutation(len(others))[:self.per_scene - 1]]
        samples = []
        for expression in positives:
            found = predictor.predict(scene.image, Expression(expression.text))
            samples.append(_sample(found, expression.text, scene.objects[expression.target].box[None],
                                   expression.kind))
        for negative in negative_expressions(scene, np.random.default_rng([scene.seed, 11]), self.per_scene):
            samples.append(_sample(predictor.predict(scene.image, Expression(negative.text)), negative.text, None,
                                   negative.reason))
        return samples

    def _categories(self, model: EvalModel, scene: Any) -> list[RejectionSample]:
        from train.data.shapeworld import CATEGORY_NAMES
        from train.data.shapeworld.scene import object_boxes

        rng = np.random.default_rng([scene.seed, 13])
        present = [name for name in CATEGORY_NAMES if any(o.shape == name for o in scene.objects)]
        absent = [name for name in CATEGORY_NAMES if name not in present]
        chosen = [present[i] for i in rng.permutation(len(present))[:self.per_scene]]
        chosen += [absent[i] for i in rng.permutation(len(absent))[:self.per_scene]]
        samples = []
        for name in chosen:
            found = model.predictor.predict(scene.image, Categories([name]))
            boxes = object_boxes([o for o in scene.objects if o.shape == name])
            samples.append(_sample(found, name, boxes if name in present else None,
                                   "category" if name in present else "absent category", label=0))
        return samples

    def settings(self) -> dict[str, Any]:
        return {"num_scenes": self.num_scenes, "split": self.split, "seed": self.seed, "per_scene": self.per_scene,
                "prompt": self.prompt, "hit_iou": HIT_IOU, **self._calibration_settings()}


class ReferRejectionBenchmark(_RejectionBenchmark):
    """A refer-layout set (``<data_root>/<dataset>/refs(<split_by>).p`` + ``instances.json``): every sentence of
    ``split`` is a positive; negatives from the ``negatives`` JSON list or borrowed from other images with ``seed``
    (module docstring). Samples alternate positive / negative, so ``--limit`` keeps the mix."""

    def __init__(self, data_root: str | Path, dataset: str = "refcoco", split: str = "val", *,
                 split_by: str | None = None, image_root: str | Path | None = None, negatives: str | Path | None = None,
                 seed: int = 0, calibrator: RejectionCalibrator | None = None):
        from eval.benchmarks.refer import DEFAULT_SPLIT_BY
        from train.data.readers import read_refer

        if calibrator is not None and calibrator.prompt != "referring":
            raise ValueError(f"a refer set calibrates referring prompts, the calibration is for {calibrator.prompt} "
                             "prompts")
        self.data_root, self.dataset, self.split, self.seed = Path(data_root), dataset, split, seed
        self.split_by = split_by or DEFAULT_SPLIT_BY.get(dataset, "unc")
        self.negatives_file = None if negatives is None else Path(negatives)
        self.calibrator = calibrator
        refs = read_refer(self.data_root, dataset, self.split_by, split, image_root)
        if not refs:
            raise ValueError(f"{dataset} {split}: no refs in this split")
        images = {ref.image.image_id: ref.image for ref in refs}
        positives = []  # (image_id, sentence, box or None, reason)
        for ref in refs:
            positives += [(ref.image.image_id, s, ref.image.instances[0].box, "sentence") for s in ref.sentences]
        if self.negatives_file is not None:
            negatives_list = [(image_id, s, None, "listed") for image_id, s in _read_negatives(self.negatives_file, images)]
        else:
            negatives_list = _borrowed_negatives(positives, seed)
        samples = []
        for k in range(max(len(positives), len(negatives_list))):
            samples += ([positives[k]] if k < len(positives) else []) + ([negatives_list[k]] if k < len(negatives_list) else [])
        self.samples, self.images = samples, images
        self.name = f"{dataset} {split} rejection (referring)"

    def __len__(self) -> int:
        return len(self.samples)

    def run_sample(self, model: EvalModel, index: int) -> list[RejectionSample]:
        from glee_core.image_io import load_image

        image_id, sentence, box, reason = self.samples[index]
        found = model.predictor.predict(load_image(self.images[image_id].path), Expression(sentence))
        return [_sample(found, sentence, None if box is None else np.asarray(box, np.float32)[None], reason)]

    def settings(self) -> dict[str, Any]:
        return {"data_root": str(self.data_root), "dataset": self.dataset, "split_by": self.split_by,
                "split": self.split, "negatives": str(self.negatives_file) if self.negatives_file else
                f"borrowed from other images (seed {self.seed})", "hit_iou": HIT_IOU, **self._calibration_settings()}


def _normalise(text: str) -> str:
    return " ".join(Expression(text).normalized.split())


def _borrowed_negatives(positives: list[tuple], seed: int) -> list[tuple]:
    """One sentence of another image per positive (never one of the image's own sentences), deterministic."""
    own: dict[int, set[str]] = {}
    for image_id, sentence, _, _ in positives:
        own.setdefault(image_id, set()).add(_normalise(sentence))
    rng = np.random.default_rng(seed)
    borrowed = []
    for image_id, _, _, _ in positives:
        for _ in range(20):
            other_id, sentence, _, _ = positives[int(rng.integers(len(positives)))]
            if other_id != image_id and _normalise(sentence) not in own[image_id]:
                borrowed.append((image_id, sentence, None, "other image"))
                break
    return borrowed


def _read_negatives(path: Path, images: dict[int, Any]) -> list[tuple[int, str]]:
    """``[{"image_id": int, "sentence": str}, ...]``; errors name the file and the entry."""
    entries = read_json(path, "negatives file")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: must hold a non-empty JSON list of {{\"image_id\": int, \"sentence\": str}}")
    found = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: entry {index} must be an object, got {entry!r}")
        image_id, sentence = entry.get("image_id"), entry.get("sentence")
        if not isinstance(image_id, int) or isinstance(image_id, bool):
            raise ValueError(f"{path}: entry {index} field 'image_id' must be an integer, got {image_id!r}")
        if not isinstance(sentence, str) or not sentence.strip():
            raise ValueError(f"{path}: entry {index} field 'sentence' must be a non-empty string, got {sentence!r}")
        if image_id not in images:
            raise ValueError(f"{path}: entry {index} image_id {image_id} is not an image of this split")
        found.append((image_id, sentence))
    return found
