"""Answers: [SEG] spans and phrases, cited objects, and generate() on a tiny model."""
from __future__ import annotations

import numpy as np
import pytest

from mllm.answer_io import answer_to_json, segments_as_detections
from mllm.generation import MllmAnswer, cited_indices, segment_spans


def test_spans_name_the_phrase_each_seg_closes():
    text = "Sure, the red circle [SEG] and the star <obj2> [SEG]."
    spans = segment_spans(text)
    assert [(s.phrase, text[s.start:s.end]) for s in spans] == [("Sure, the red circle", "[SEG]"),
                                                                ("and the star", "[SEG]")]
    assert cited_indices(text) == [2] and segment_spans("no masks.") == []


def test_generate_returns_objects_and_consistent_spans(model, image):
    answer = model.generate(image, "Please segment the red circle.")
    assert isinstance(answer, MllmAnswer)
    assert len(answer.objects) == model.config.num_objects and answer.objects.masks.shape[1:] == image.shape[:2]
    assert len(answer.segments) == answer.text.count("[SEG]")
    for span in answer.segments:
        assert len(span.detections) == 1 and span.detections.masks.shape == (1, *image.shape[:2])
        assert 0 <= span.object_index < model.config.num_objects
    assert answer_to_json(answer, "q")["answer"] == answer.text


def test_segments_become_one_detections_with_their_phrases(model, image):
    from glee_core.structures import Detections

    answer = MllmAnswer("the circle [SEG] and the star [SEG].", segment_spans("the circle [SEG] and the star [SEG]."))
    for k, span in enumerate(answer.segments):
        masks = np.zeros((1, 4, 4), bool)
        masks[0, k] = True
        span.detections = Detections(boxes=[[0, k, 4, k + 1]], scores=[0.9 - k / 10], labels=[0],
                                     label_names=[span.phrase], image_size=(4, 4), masks=masks)
    merged = segments_as_detections(answer)
    assert merged.label_names == ["0: the circle", "1: and the star"] and merged.labels.tolist() == [0, 1]
    data = answer_to_json(answer, "q")
    assert [s["score"] for s in data["segments"]] == pytest.approx([0.9, 0.8])
    assert data["segments"][1]["box_xyxy"] == [0.0, 1.0, 4.0, 2.0]


def test_empty_question_is_refused(model, image):
    with pytest.raises(ValueError, match="question is empty"):
        model.generate(image, "  ")


def test_objects_are_the_proposals_the_answer_shows(model, image):
    objects = model.objects(image)
    shown = model.generate(image, "What is <obj1>?").objects
    assert objects.label_names == [f"obj{k}" for k in range(model.config.num_objects)]
    assert np.allclose(objects.boxes, shown.boxes) and np.array_equal(objects.masks, shown.masks)
