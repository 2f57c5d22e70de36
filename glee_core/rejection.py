"""Calibrated "no such object": the probability that a prompted object is really in the image.

GLEE answers a referring expression (or a category name) with its best box even when nothing in the image
matches. A :class:`RejectionCalibrator` maps the scores of that prediction to P(the object is there) with a small
logistic model, and turns it into a decision with a threshold chosen on the set it was fit on.

Features (:func:`prediction_features`, named by ``FEATURES``), from the scores of one :class:`Detections` as
``GleePredictor.predict`` returns it by default (no ``topk`` / ``score_threshold``, which would change the margin):

* ``top_logit``: ``log(s1 / (1 - s1))`` of the best score ``s1`` (clipped to [1e-6, 1 - 1e-6]; ``s1 = 0`` when
  there is no detection);
* ``margin``: ``s1 - s2``, ``s2`` the second-best score (0 when there is none). A referring prediction holds one
  detection, so its margin is ``s1`` itself; category prompts hold the model's top-k, and ``label`` restricts
  both features to the detections of one category name.

Model: ``p = sigmoid(w · (x - mean) / scale + b)``, ``mean`` / ``scale`` the fit set's feature mean and standard
deviation, fit by Newton's method on the mean log-loss plus ``l2 / 2 · |w|²`` (the penalty keeps the weights finite
on separable sets; the bias is not penalised). ``p`` is calibrated to the fit set, its share of positives
(``fit_summary["prior"]``) included: on data with another mix of present and absent objects, or another kind of
image, refit on a labelled set of that data (``gleekit eval calibrate-refer``).

Threshold (accept when ``p >= threshold``), chosen on the fit set among 0, 1 and the midpoints between consecutive
distinct fitted probabilities:

* default rule ``"balanced"``: the one maximising balanced accuracy, (acceptance of positives + rejection of
  negatives) / 2; among ties the median one;
* ``target_rejection=r``: the lowest threshold that rejects at least a share ``r`` of the fit set's negatives, so
  that as many positives as possible are accepted.

File (:meth:`RejectionCalibrator.save` / :meth:`RejectionCalibrator.load`): a small JSON object with ``format``
(``"gleekit.rejection"``), ``version`` (1), ``features``, ``mean``, ``scale``, ``weights``, ``bias``,
``threshold``, ``threshold_rule``, ``model`` / ``model_sha256`` (the model it was fit for: name and weights
hash), ``prompt`` (``"referring"`` or ``"category"``), ``target`` (what a positive meant: ``"exists"`` an object
matching the prompt is in the image, ``"correct"`` and the predicted box hits it) and ``fit`` (counts and figures
of the fit set). :meth:`load` refuses a malformed file with a :class:`CalibrationFileError` naming file and field.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from glee_core.json_file import read_json

FORMAT = "gleekit.rejection"
VERSION = 1
FEATURES = ("top_logit", "margin")
PROMPTS = ("referring", "category")
TARGETS = ("exists", "correct")
SCORE_EPS = 1e-6
DEFAULT_L2 = 1e-2


class CalibrationFileError(ValueError):
    """A calibration file that cannot be used (not JSON, a missing or malformed field, another version)."""


class Decision(NamedTuple):
    """P(the prompted object is in the image) and whether it clears the calibrator's threshold."""

    probability: float
    accepted: bool


def prediction_features(detections: Any, label: int | None = None) -> np.ndarray:
    """The ``FEATURES`` of one prediction (a :class:`Detections`, or anything with ``scores`` and ``labels``) as
    float64 ``[len(FEATURES)]``; ``label`` keeps only the detections of that label (one category of a prompt)."""
    scores = np.asarray(detections.scores, dtype=np.float64).reshape(-1)
    if label is not None:
        names = getattr(detections, "label_names", None)
        if names is not None and not 0 <= label < len(names):
            raise ValueError(f"label {label} does not index the {len(names)} label names {list(names)}")
        scores = scores[np.asarray(detections.labels).reshape(-1) == label]
    top = np.sort(scores)[::-1][:2]
    first = float(top[0]) if len(top) else 0.0
    second = float(top[1]) if len(top) > 1 else 0.0
    clipped = min(max(first, SCORE_EPS), 1.0 - SCORE_EPS)
    return np.array([math.log(clipped / (1.0 - clipped)), first - second], dtype=np.float64)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free


def _log_loss(z: np.ndarray, y: np.ndarray) -> float:
    """Mean of -log p(y | z) for logits ``z``."""
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def _newton_logistic(x: np.ndarray, y: np.ndarray, l2: float, iterations: int = 100) -> tuple[np.ndarray, float]:
    """Weights and bias minimising mean log-loss + l2 / 2 |w|² (Newton with step halving)."""
    n, f = x.shape
    design = np.concatenate([x, np.ones((n, 1))], axis=1)
    penalty = np.r_[np.full(f, l2), 0.0]
    theta = np.zeros(f + 1)
    prior = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
    theta[-1] = math.log(prior / (1 - prior))

    def objective(t: np.ndarray) -> float:
        return _log_loss(design @ t, y) + 0.5 * float(np.sum(penalty * t * t))

    current = objective(theta)
    for _ in range(iterations):
        p = _sigmoid(design @ theta)
        gradient = design.T @ (p - y) / n + penalty * theta
        hessian = (design * (p * (1 - p))[:, None]).T @ design / n + np.diag(penalty + 1e-10)
        step = np.linalg.solve(hessian, gradient)
        scale = 1.0
        while scale > 1e-8:
            candidate = theta - scale * step
            value = objective(candidate)
            if value <= current:
                break
            scale *= 0.5
        else:
            break
        theta, previous, current = candidate, current, value
        if previous - current < 1e-14 and np.max(np.abs(scale * step)) < 1e-10:
            break
    return theta[:-1], float(theta[-1])


def _choose_threshold(probabilities: np.ndarray, labels: np.ndarray,
                      target_rejection: float | None) -> tuple[float, str]:
    """The threshold on ``probabilities`` by the module docstring's rule, and the rule's name."""
    unique = np.unique(probabilities)
    candidates = np.concatenate([[0.0], (unique[:-1] + unique[1:]) / 2, [1.0]])
    positives, negatives = np.sort(probabilities[labels == 1]), np.sort(probabilities[labels == 0])
    accepted = 1.0 - np.searchsorted(positives, candidates, side="left") / len(positives)  # share with p >= t
    rejected = np.searchsorted(negatives, candidates, side="left") / len(negatives)  # share with p < t
    if target_rejection is None:
        balanced = (accepted + rejected) / 2
        best = np.flatnonzero(balanced >= balanced.max() - 1e-12)
        return float(candidates[best[len(best) // 2]]), "balanced"
    meets = np.flatnonzero(rejected >= target_rejection - 1e-12)
    index = meets[0] if len(meets) else len(candidates) - 1
    return float(candidates[index]), f"target_rejection={target_rejection:g}"


@dataclass
class RejectionCalibrator:
    """A fitted logistic model from :func:`prediction_features` to P(the prompted object is there), and its
    threshold; build one with :meth:`fit` or :meth:`load` (see the module docstring)."""

    weights: np.ndarray
    bias: float
    mean: np.ndarray
    scale: np.ndarray
    threshold: float
    threshold_rule: str = "balanced"
    model: str = ""
    model_sha256: str = ""
    prompt: str = "referring"
    target: str = "exists"
    fit_summary: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(cls, features: Any, labels: Any, *, target_rejection: float | None = None, l2: float = DEFAULT_L2,
            model: str = "", model_sha256: str = "", prompt: str = "referring", target: str = "exists",
            summary: dict[str, Any] | None = None) -> "RejectionCalibrator":
        """Fit on ``features`` ``[N, len(FEATURES)]`` (rows of :func:`prediction_features`) and ``labels`` ``[N]``
        (1: the object is there, 0: it is not); needs both. ``target_rejection`` in (0, 1] picks the threshold
        rule (module docstring); ``model`` / ``model_sha256`` / ``prompt`` / ``target`` record what it is for;
        ``summary`` adds entries to ``fit_summary`` (e.g. where the data came from)."""
        x = np.asarray(features, dtype=np.float64)
        y = np.asarray(labels)
        if x.ndim != 2 or x.shape[1] != len(FEATURES):
            raise ValueError(f"features must be [N, {len(FEATURES)}] ({', '.join(FEATURES)}), got {x.shape}")
        if y.shape != (len(x),):
            raise ValueError(f"labels must be [N] with N = {len(x)} (one per feature row), got {y.shape}")
        if not np.isfinite(x).all():
            raise ValueError("features must be finite, got NaN or inf")
        if not np.isin(y, (0, 1)).all():
            raise ValueError(f"labels must be 0 or 1, got values {sorted(set(y.tolist()) - {0, 1})[:5]}")
        y = y.astype(np.float64)
        positives, negatives = int(y.sum()), int(len(y) - y.sum())
        if positives == 0 or negatives == 0:
            raise ValueError(f"fitting a rejection calibrator needs both positives (label 1) and negatives (label 0); "
                             f"got {positives} positives and {negatives} negatives")
        if target_rejection is not None and not 0.0 < target_rejection <= 1.0:
            raise ValueError(f"target_rejection must be in (0, 1], got {target_rejection}")
        if not l2 > 0:
            raise ValueError(f"l2 must be > 0 (it keeps the weights finite on separable sets), got {l2}")
        _check_choice(prompt, PROMPTS, "prompt")
        _check_choice(target, TARGETS, "target")
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale[scale < 1e-12] = 1.0
        weights, bias = _newton_logistic((x - mean) / scale, y, l2)
        calibrator = cls(weights, bias, mean, scale, 0.5, model=model, model_sha256=model_sha256, prompt=prompt,
                         target=target)
        fitted = calibrator.probabilities(x)
        calibrator.threshold, calibrator.threshold_rule = _choose_threshold(fitted, y, target_rejection)
        accepted = fitted >= calibrator.threshold
        calibrator.fit_summary = {
            "samples": len(y), "positives": positives, "negatives": negatives, "prior": positives / len(y),
            "l2": l2, "acceptance of positives": float(accepted[y == 1].mean()),
            "rejection of negatives": float((~accepted[y == 0]).mean()),
            "log loss": _log_loss(calibrator._logits(x), y), **(summary or {}),
        }
        return calibrator

    # ------------------------------------------------------------------ use
    def _logits(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) / self.scale) @ self.weights + self.bias

    def probabilities(self, features: Any) -> np.ndarray:
        """P(object there) of feature rows ``[N, len(FEATURES)]`` -> float64 ``[N]``."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(FEATURES):
            raise ValueError(f"features must be [N, {len(FEATURES)}] ({', '.join(FEATURES)}), got {x.shape}")
        return _sigmoid(self._logits(x))

    def probability(self, detections: Any, label: int | None = None) -> float:
        """P(the object the prompt describes is in the image), from the predictor's default output for that prompt
        (``label``: one category of a category prompt)."""
        return float(self.probabilities(prediction_features(detections, label)[None])[0])

    def decide(self, detections: Any, label: int | None = None) -> Decision:
        """:meth:`probability` and whether it reaches ``threshold`` (False: report "no such object")."""
        probability = self.probability(detections, label)
        return Decision(probability, probability >= self.threshold)

    def accepts(self, detections: Any, label: int | None = None) -> bool:
        return self.decide(detections, label).accepted

    def check_model(self, sha256: str) -> None:
        """Refuse (ValueError) a model whose weights hash differs from the one this calibration was fit for (no
        check when either hash is unknown, i.e. empty)."""
        if self.model_sha256 and sha256 and sha256 != self.model_sha256:
            raise ValueError(f"this calibration was fit for {self.model or 'another model'} (weights sha256 "
                             f"{self.model_sha256[:12]}…), not for weights {sha256[:12]}…; refit it for this model")

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": VERSION, "model": self.model, "model_sha256": self.model_sha256,
            "prompt": self.prompt, "target": self.target, "features": list(FEATURES),
            "mean": [float(v) for v in self.mean], "scale": [float(v) for v in self.scale],
            "weights": [float(v) for v in self.weights], "bias": float(self.bias),
            "threshold": float(self.threshold), "threshold_rule": self.threshold_rule,
            "fit": _jsonable(self.fit_summary),
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if path.parent != Path(""):
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def from_dict(cls, data: Any, source: str = "calibration") -> "RejectionCalibrator":
        """Validate a :meth:`to_dict` object (errors name ``source`` and the field)."""
        def fail(name: str, problem: str) -> CalibrationFileError:
            return CalibrationFileError(f"{source}: field {name!r} {problem}")

        if not isinstance(data, dict):
            raise CalibrationFileError(f"{source}: must hold a JSON object, got {type(data).__name__}")

        def get(name: str, kind: type | tuple[type, ...]) -> Any:
            if name not in data:
                raise fail(name, "is missing")
            value = data[name]
            if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
                names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
                raise fail(name, f"must be {names}, got {value!r}")
            return value

        def number(name: str) -> float:
            value = float(get(name, (int, float)))
            if not math.isfinite(value):
                raise fail(name, f"must be finite, got {value}")
            return value

        def vector(name: str) -> np.ndarray:
            value = get(name, list)
            if len(value) != len(FEATURES) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
                raise fail(name, f"must be a list of {len(FEATURES)} finite numbers, got {value!r}")
            return np.asarray(value, dtype=np.float64)

        if get("format", str) != FORMAT:
            raise fail("format", f"must be {FORMAT!r}, got {data['format']!r}")
        version = get("version", int)
        if version != VERSION:
            newer = " (written by a newer gleekit)" if version > VERSION else ""
            raise fail("version", f"must be {VERSION}, got {version}{newer}")
        if get("features", list) != list(FEATURES):
            raise fail("features", f"must be {list(FEATURES)}, got {data['features']!r}")
        scale = vector("scale")
        if (scale <= 0).any():
            raise fail("scale", f"must be positive, got {scale.tolist()}")
        threshold = number("threshold")
        if not 0.0 <= threshold <= 1.0:
            raise fail("threshold", f"must be a probability in [0, 1], got {threshold}")
        prompt, target = get("prompt", str), get("target", str)
        if prompt not in PROMPTS:
            raise fail("prompt", f"must be one of {PROMPTS}, got {prompt!r}")
        if target not in TARGETS:
            raise fail("target", f"must be one of {TARGETS}, got {target!r}")
        summary = data.get("fit", {})
        if not isinstance(summary, dict):
            raise fail("fit", f"must be an object, got {summary!r}")
        return cls(weights=vector("weights"), bias=number("bias"), mean=vector("mean"), scale=scale,
                   threshold=threshold, threshold_rule=get("threshold_rule", str), model=get("model", str),
                   model_sha256=get("model_sha256", str), prompt=prompt, target=target, fit_summary=dict(summary))

    @classmethod
    def load(cls, path: str | Path) -> "RejectionCalibrator":
        """Read a :meth:`save` file; a missing file raises FileNotFoundError, a malformed one CalibrationFileError."""
        return cls.from_dict(read_json(path, "calibration file", CalibrationFileError), source=str(path))


def _check_choice(value: str, choices: tuple[str, ...], name: str) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _jsonable(value: Any) -> Any:
    """numpy scalars / arrays inside the fit summary -> plain JSON values."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
