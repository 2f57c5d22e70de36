"""An :class:`mllm.generation.MllmAnswer` as JSON (boxes xyxy pixels, masks COCO RLE) and as one Detections."""
from __future__ import annotations

import numpy as np

from glee_core.structures import Detections
from mllm.generation import MllmAnswer


def segments_as_detections(answer: MllmAnswer) -> Detections | None:
    """Every ``[SEG]`` mask of the answer in one Detections (label k = segment k's phrase), or None."""
    parts = answer.masks
    if not parts:
        return None
    names = [f"{i}: {span.phrase or 'object'}" for i, span in enumerate(answer.segments) if span.detections]
    return Detections(boxes=np.concatenate([d.boxes for d in parts]), scores=np.concatenate([d.scores for d in parts]),
                      labels=np.arange(len(parts)), label_names=names, image_size=parts[0].image_size,
                      masks=np.concatenate([d.masks for d in parts]))


def answer_to_json(answer: MllmAnswer, question: str) -> dict:
    """The answer, each segment (span, phrase, score, box, RLE mask) and the cited objects."""
    segments = []
    for span in answer.segments:
        item = {"start": span.start, "end": span.end, "phrase": span.phrase, "object_index": span.object_index}
        if span.detections is not None:
            data = span.detections.to_json_dict()
            item.update(box_xyxy=data["boxes"][0], score=data["scores"][0], mask_rle=data["masks"][0])
        segments.append(item)
    cited = answer.cited_objects()
    return {"question": question, "answer": answer.text, "segments": segments, "cited": answer.cited,
            "cited_objects": None if cited is None else cited.to_json_dict()}
