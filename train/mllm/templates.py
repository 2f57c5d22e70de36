"""LISA's question / answer templates, kept as data (``templates.json`` beside this module) and checked on load.

Every template is a ``str.format`` pattern whose placeholders are exactly those the code fills in
(``PLACEHOLDERS``); a template with a missing, extra or positional placeholder, a literal ``[SEG]`` or an
image placeholder is refused with an error naming it. Rendering draws the variant from a caller's rng, so
a source stays deterministic in its index.
"""
from __future__ import annotations

import math
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from glee_core.json_file import read_json
from mllm.tokens import IMAGE_TOKEN, SEG_TOKEN

DEFAULT_PATH = Path(__file__).with_name("templates.json")

# template key (dotted for nested ones) -> the placeholders it must contain, no more, no fewer
PLACEHOLDERS: dict[str, frozenset[str]] = {
    "short_questions": frozenset({"object"}),
    "long_questions": frozenset({"sentence"}),
    "answers": frozenset({"seg"}),
    "multi.object": frozenset({"object"}),
    "multi.separator": frozenset(),
    "multi.last_separator": frozenset(),
    "multi.questions": frozenset({"objects"}),
    "multi.answers": frozenset({"segs"}),
    "explanatory.suffixes": frozenset(),
    "explanatory.question": frozenset({"sentence", "suffix"}),
    "explanatory.answer": frozenset({"answer", "explanation"}),
    "explanatory.text_only_question": frozenset({"sentence"}),
    "explanatory.text_only_answer": frozenset({"explanation"}),
}
QUESTION_KEYS = ("short_questions", "long_questions", "multi.questions", "explanatory.suffixes",
                 "explanatory.question", "explanatory.text_only_question")
RATE_KEYS = ("explanatory.text_only_rate", "explanatory.explain_rate")


class TemplateError(ValueError):
    """A templates file that cannot be used; the message names the file and the template."""


def _lookup(data: dict, key: str, path: Path) -> Any:
    value: Any = data
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise TemplateError(f"{path}: missing key {key!r}")
        value = value[part]
    return value


def _fields(template: str, where: str) -> set[str]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise TemplateError(f"{where}: {template!r} is not a format pattern ({error}); "
                            "write literal braces as {{ }}") from None
    names = set()
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise TemplateError(f"{where}: {template!r} has placeholder {{{name}{'!' + conversion if conversion else ''}"
                                f"{':' + spec if spec else ''}}}; use plain named placeholders like {{object}}")
        names.add(name)
    return names


def _checked(value: Any, key: str, path: Path) -> tuple[str, ...]:
    """``value`` (one template or a non-empty list of them) as a tuple, each with exactly its placeholders."""
    many = isinstance(value, list)
    items = value if many else [value]
    if many and not items:
        raise TemplateError(f"{path}: {key!r} is an empty list; give at least one template")
    for i, template in enumerate(items):
        where = f"{path}: {key}" + (f"[{i}]" if many else "")
        if not isinstance(template, str):
            raise TemplateError(f"{where} must be a string, got {type(template).__name__}")
        names, required = _fields(template, where), PLACEHOLDERS[key]
        if names != required:
            want = ", ".join(f"{{{n}}}" for n in sorted(required)) or "no placeholders"
            raise TemplateError(f"{where}: {template!r} must contain exactly {want}; found "
                                f"{', '.join(f'{{{n}}}' for n in sorted(names)) or 'none'}")
        if SEG_TOKEN in template:
            raise TemplateError(f"{where}: {template!r} writes {SEG_TOKEN} literally; use the {{seg}} placeholder")
        if key in QUESTION_KEYS and IMAGE_TOKEN in template:
            raise TemplateError(f"{where}: {template!r} contains {IMAGE_TOKEN}; the model's prompt layout inserts it")
    return tuple(items)


def _rate(data: dict, key: str, path: Path) -> float:
    value = _lookup(data, key, path)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= 1:
        raise TemplateError(f"{path}: {key} must be a number in [0, 1], got {value!r}")
    return float(value)


def fill(template: str, **values: str) -> str:
    """``template.format(**values)``; where the template writes "the {object}" a leading "the " of the object is
    dropped (referring sentences often start with one: no "segment the the circle")."""
    text = values.get("object")
    if text is not None and "the {object}" in template and text[:4].lower() == "the ":
        values = {**values, "object": text[4:]}
    return template.format(**values)


def _pick(rng: np.random.Generator, templates: tuple[str, ...], **values: str) -> str:
    return fill(templates[int(rng.integers(len(templates)))], **values)


@dataclass(frozen=True)
class Templates:
    """The loaded templates (field names follow the json keys, ``multi.object`` → ``multi_object``)."""

    short_questions: tuple[str, ...]
    long_questions: tuple[str, ...]
    answers: tuple[str, ...]
    multi_object: str
    multi_separator: str
    multi_last_separator: str
    multi_questions: tuple[str, ...]
    multi_answers: tuple[str, ...]
    explanatory_suffixes: tuple[str, ...]
    explanatory_question: str
    explanatory_answer: str
    explanatory_text_only_question: str
    explanatory_text_only_answer: str
    text_only_rate: float  # ReasonSeg images with an explanation: share answered by the text alone (LISA 0.1)
    explain_rate: float  # of the rest: share whose [SEG] answer is followed by the explanation (LISA 0.5)

    @classmethod
    def load(cls, path: str | Path | None = None) -> Templates:
        """Read and check a templates json (default: the bundled ``templates.json``)."""
        path = Path(path) if path is not None else DEFAULT_PATH
        data = read_json(path, "templates file", TemplateError)
        if not isinstance(data, dict):
            raise TemplateError(f"{path}: the top level must be an object of templates")
        known = {key.split(".")[0] for key in (*PLACEHOLDERS, *RATE_KEYS)}
        if unknown := sorted(set(data) - known):
            raise TemplateError(f"{path}: unknown keys {unknown}; expected {sorted(known)}")
        values = {}
        for key in PLACEHOLDERS:
            raw = _lookup(data, key, path)
            checked = _checked(raw, key, path)
            values[key.replace(".", "_")] = checked if isinstance(raw, list) else checked[0]
        return cls(**values, text_only_rate=_rate(data, RATE_KEYS[0], path), explain_rate=_rate(data, RATE_KEYS[1], path))

    def question(self, rng: np.random.Generator, text: str, is_sentence: bool = False) -> str:
        """A question asking for one mask: ``text`` in a long template when it is a sentence, else in a short one."""
        if is_sentence:
            return _pick(rng, self.long_questions, sentence=text)
        return _pick(rng, self.short_questions, object=text)

    def answer(self, rng: np.random.Generator) -> str:
        """An answer with one ``[SEG]``."""
        return _pick(rng, self.answers, seg=SEG_TOKEN)

    def join(self, items: list[str]) -> str:
        """``a``, ``a and b``, ``a, b and c`` (separators from the templates)."""
        if len(items) < 2:
            return "".join(items)
        return self.multi_separator.join(items[:-1]) + self.multi_last_separator + items[-1]

    def multi_turn(self, rng: np.random.Generator, objects: list[str]) -> tuple[str, str]:
        """(question naming every object, answer with one ``[SEG]`` per object in the same order)."""
        named = self.join([fill(self.multi_object, object=text) for text in objects])
        question = _pick(rng, self.multi_questions, objects=named)
        return question, _pick(rng, self.multi_answers, segs=self.join([SEG_TOKEN] * len(objects)))

    def explained_turn(self, rng: np.random.Generator, text: str, explanation: str) -> tuple[str, str]:
        """LISA's explanatory turn: ``text`` + an explanatory suffix; an ``[SEG]`` answer + the explanation."""
        question = self.explanatory_question.format(sentence=text, suffix=_pick(rng, self.explanatory_suffixes))
        return question, self.explanatory_answer.format(answer=self.answer(rng), explanation=explanation)

    def text_only_turn(self, text: str, explanation: str) -> tuple[str, str]:
        """LISA's text-only explanatory turn: the query alone, answered by the explanation (no ``[SEG]``)."""
        return (self.explanatory_text_only_question.format(sentence=text),
                self.explanatory_text_only_answer.format(explanation=explanation))
