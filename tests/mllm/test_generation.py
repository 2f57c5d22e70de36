"""Answers: [SEG] spans and phrases, cited objects, and generate() on a tiny model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

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


def test_pointer_mask_source_gives_each_seg_the_mask_of_the_object_it_points_at(model, image):
    from glee_core import processing

    batch = processing.preprocess([image], model.glee.config.input)
    with torch.no_grad():
        objects = model.propose(batch)
    answer = model._answer("the circle [SEG] and the star [SEG].", None, objects, batch, [3, 1])
    shown = answer.objects
    for span, k in zip(answer.segments, [3, 1], strict=True):
        assert span.object_index == k and span.detections.label_names == [span.phrase]
        assert np.array_equal(span.detections.masks[0], shown.masks[k])
        assert np.allclose(span.detections.boxes[0], shown.boxes[k]) and span.detections.scores[0] == shown.scores[k]
    generated = model.generate(image, "Please segment the red circle.", mask_source="pointer")
    for span in generated.segments:
        assert np.array_equal(span.detections.masks[0], generated.objects.masks[span.object_index])
    with pytest.raises(ValueError, match=r"mask_source must be one of \['glee', 'pointer'\], got 'sam'"):
        model.generate(image, "Please segment the red circle.", mask_source="sam")


def test_the_segs_of_one_answer_point_at_distinct_objects():
    from mllm.modeling import distinct_objects

    logits = torch.tensor([[0.0, 1.0, 5.0], [0.0, 3.0, 4.0]])  # both prefer object 2
    assert logits.argmax(-1).tolist() == [2, 2] and distinct_objects(logits) == [2, 1]
    swapped = torch.tensor([[0.0, 4.9, 5.0], [0.0, 0.0, 9.0]])  # the second is surer of 2: the first moves
    assert distinct_objects(swapped) == [1, 2]
    assert distinct_objects(torch.tensor([[1.0, 3.0]])) == [1]
    crowded = torch.tensor([[1.0, 3.0], [1.0, 3.0], [2.0, 0.0]])  # more [SEG] than objects: argmax each
    assert distinct_objects(crowded) == [1, 1, 0] and distinct_objects(torch.zeros(0, 4)) == []


def test_pointer_mask_source_needs_object_tokens():
    from mllm.config import GleeLLMConfig

    with pytest.raises(ValueError, match=r"mask_source 'pointer' needs object tokens to point at \(num_objects > 0\)"):
        GleeLLMConfig(num_objects=0, mask_source="pointer")
    with pytest.raises(ValueError, match="mask_source must be one of"):
        GleeLLMConfig(mask_source="proposals")


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
