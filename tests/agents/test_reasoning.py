"""Numbered overlays, the select tool and the reasoning loop, driven by scripted langchain-core chat models
over the nano toolkit on a held-out shapeworld scene."""
from __future__ import annotations

import base64
import io
import re
from collections.abc import Callable

import numpy as np
import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from PIL import Image

from agents.errors import BadArgument, NotFound
from agents.numbered import OKABE_ITO, contrast_color, draw_numbered, outline
from agents.reasoning import NUDGE, reason_segment
from agents.results import numbered_overlay_png
from glee_core.mask_ops import decode_rle
from glee_core.structures import Detections
from tests.agents.conftest import data_url

Step = Callable[[list[BaseMessage]], AIMessage]


class ScriptedChat(BaseChatModel):
    """A stand-in LLM: step k (k = AI messages so far) maps the transcript to the next reply."""

    steps: list[Step]
    bound: list[str] = []

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        step = self.steps[sum(isinstance(m, AIMessage) for m in messages)]
        return ChatResult(generations=[ChatGeneration(message=step(messages))])

    def bind_tools(self, tools, **kwargs):
        self.bound = [convert_to_openai_tool(tool)["function"]["name"] for tool in tools]
        return self


def call(name: str, args, id: str = "c1") -> dict:
    return {"name": name, "args": args, "id": id, "type": "tool_call"}


def image_of(messages: list[BaseMessage]) -> str:
    return re.search(r"img_\d+", messages[1].content[0]["text"]).group()


def last_objects(messages: list[BaseMessage]) -> list[str]:
    tool = next(m for m in reversed(messages) if isinstance(m, ToolMessage))
    return [o["id"] for o in tool.artifact["objects"]]


def tool_step(name: str, **args) -> Step:
    return lambda messages: AIMessage("", tool_calls=[call(name, {"image": image_of(messages), **args})])


def select_step(pick: slice = slice(0, 1), text: str = "") -> Step:
    return lambda messages: AIMessage(text, tool_calls=[call("select", {"image": image_of(messages),
                                                                         "ids": last_objects(messages)[pick]})])


def object_mask(toolkit, handle: str) -> np.ndarray:
    return decode_rle(toolkit.object(handle).mask.model_dump())


def png_pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"))


def overlays(transcript: list[BaseMessage]) -> list[HumanMessage]:
    return [m for m in transcript[2:] if isinstance(m, HumanMessage) and isinstance(m.content, list)]


# ---------------------------------------------------------------------------------------------- numbered overlays
def test_numbered_overlay_outlines_masks_and_draws_labels():
    image = np.full((256, 256, 3), 100, dtype=np.uint8)
    masks = np.zeros((2, 256, 256), dtype=bool)
    masks[0, 40:100, 30:90] = True
    yy, xx = np.mgrid[:256, :256]
    masks[1] = (xx - 180) ** 2 + (yy - 170) ** 2 < 30 ** 2
    canvas = draw_numbered(image, masks)
    assert canvas.shape == image.shape and canvas.dtype == np.uint8
    for i, mask in enumerate(masks):
        edge = outline(mask, 2)
        on_colour = np.all(canvas[edge] == OKABE_ITO[i], axis=1).mean()
        assert on_colour > 0.8  # the rest is under the label box
        inner = mask & ~outline(mask, 12)
        assert (canvas[inner] == 100).all()  # outlined, not filled
    # Object 1's label: a box of its colour with dark digits around the square's top-left corner (30, 40).
    window, edge = canvas[25:56, 15:46], outline(masks[0], 2)[25:56, 15:46]
    fill = np.all(window == OKABE_ITO[0], axis=2) & ~edge
    digits = np.all(window == contrast_color(OKABE_ITO[0]), axis=2) & masks[0][25:56, 15:46]
    assert fill.sum() > 60 and digits.sum() > 5
    # Masks of another size are refused.
    with pytest.raises(ValueError, match="masks are"):
        draw_numbered(image, masks[:, :100])


def test_numbered_overlay_png_outlines_boxes_without_masks():
    image = np.full((120, 160, 3), 100, dtype=np.uint8)
    detections = Detections(boxes=np.array([[10.0, 20.0, 60.0, 80.0]]), scores=np.array([0.9]),
                            labels=np.array([0]), label_names=["box"], image_size=(120, 160))
    pixels = png_pixels(numbered_overlay_png(image, detections))
    assert pixels.shape == image.shape
    assert (pixels[50, 10] == OKABE_ITO[0]).all() and (pixels[79, 35] == OKABE_ITO[0]).all()
    assert (pixels[50, 35] == 100).all()


def test_tools_return_numbered_overlays(toolkit):
    result = toolkit.segment(image="scene.png", categories=["pentagon", "cross"], min_score=0.0, max_objects=3,
                             overlay=True, overlay_style="numbered")
    pixels = png_pixels(toolkit.overlay(result.overlay))
    assert pixels.shape == (result.height, result.width, 3)
    edge = outline(object_mask(toolkit, result.objects[0].id), 2)
    assert np.all(pixels[edge] == OKABE_ITO[0], axis=1).mean() > 0.5
    boxes = toolkit.segment(image=result.image, categories=["pentagon", "cross"], min_score=0.0, max_objects=3,
                            overlay=True)
    assert toolkit.overlay(boxes.overlay) != toolkit.overlay(result.overlay)  # the default stays "boxes"
    bad = toolkit.call("refer", {"image": result.image, "expression": "x", "overlay_style": "stars"})
    assert bad.error.code == "bad_argument" and "overlay_style" in bad.text


# ---------------------------------------------------------------------------------------------- select
def test_select_returns_the_union_of_the_chosen_masks(toolkit):
    result = toolkit.segment(image="scene.png", categories=["pentagon", "cross", "hexagon"], min_score=0.0,
                             max_objects=4)
    ids = [result.objects[0].id, result.objects[3].id, result.objects[0].id]
    selection = toolkit.select(image=result.image, ids=ids)
    union = object_mask(toolkit, ids[0]) | object_mask(toolkit, ids[1])
    np.testing.assert_array_equal(decode_rle(selection.mask.model_dump()), union)
    assert selection.area == int(union.sum()) and [o.id for o in selection.objects] == ids[:2]
    assert selection.objects[1].model_dump() == result.objects[3].model_dump()
    assert selection.summary.startswith(f"Selected 2 objects in {result.image} (256x256), {union.sum()} pixels")


def test_select_refuses_unknown_foreign_and_maskless_objects(toolkit, scene):
    first = toolkit.refer(image="scene.png", expression="the cross")
    other = toolkit.refer(image=data_url(scene.image), expression="the cross")
    detected = toolkit.detect(image=first.image, categories=["cross"], min_score=0.0, max_objects=1)
    refusals = [
        ({"ids": ["obj_99999"]}, NotFound, "unknown or expired handle 'obj_99999'"),
        ({"ids": [other.objects[0].id]}, BadArgument,
         f"{other.objects[0].id!r} was found in {other.image}, not in {first.image}"),
        ({"ids": [detected.objects[0].id]}, BadArgument, "has no mask (it came from detect)"),
        ({"ids": [first.image]}, BadArgument, "is an image handle; an object handle"),
        ({"ids": []}, BadArgument, "ids: List should have at least 1 item"),
        ({"image": "scene.png", "ids": [first.objects[0].id]}, BadArgument, "'scene.png' is not a handle"),
    ]
    for arguments, error, message in refusals:
        outcome = toolkit.call("select", {"image": first.image, **arguments})
        assert isinstance(outcome.error, error) and message in outcome.text, outcome.text


# ---------------------------------------------------------------------------------------------- the reasoning loop
def test_segment_then_select_ends_with_the_union_mask(toolkit):
    model = ScriptedChat(steps=[
        tool_step("segment", categories=["pentagon", "cross"], min_score=0.0, max_objects=3),
        select_step(slice(0, 2), text="The two shapes."),
    ])
    result = reason_segment(model, toolkit, "scene.png", "Which shapes are brown?")
    assert sorted(model.bound) == ["detect", "no_match", "refer", "segment", "select", "visual_prompt"]
    assert result.stopped == "selected" and result.answer == "The two shapes." and len(result.objects) == 2
    union = object_mask(toolkit, result.objects[0]) | object_mask(toolkit, result.objects[1])
    assert result.mask.dtype == bool and result.mask.shape == (256, 256)
    np.testing.assert_array_equal(result.mask, union)
    assert [(name, ok) for name, _, ok in result.tool_calls] == [("segment", True), ("select", True)]
    # The model saw the image, then the segment summary and its numbered overlay with the number → handle key.
    question = result.transcript[1].content
    assert "Which shapes are brown?" in question[0]["text"] and question[1]["type"] == "image_url"
    tool_message = result.transcript[3]
    assert isinstance(tool_message, ToolMessage) and tool_message.content.startswith("3 objects in img_")
    (overlay,) = overlays(result.transcript)
    key, image = overlay.content
    assert f"1 = {result.objects[0]}" in key["text"] and f"2 = {result.objects[1]}" in key["text"]
    url = image["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert png_pixels(base64.b64decode(url.split(",", 1)[1])).shape == (256, 256, 3)


def test_a_rejected_phrase_is_retried_before_selecting(toolkit):
    model = ScriptedChat(steps=[
        tool_step("refer", expression="the blue cross"),
        tool_step("refer", expression="the large brown pentagon"),
        select_step(),
    ])
    result = reason_segment(model, toolkit, "scene.png", "Where is the biggest pentagon?")
    assert result.stopped == "selected" and [n for n, _, _ in result.tool_calls] == ["refer", "refer", "select"]
    first, second = (m.artifact["objects"][0]["id"] for m in result.transcript if isinstance(m, ToolMessage)
                     and m.name == "refer")
    assert result.objects == [second] and first != second
    np.testing.assert_array_equal(result.mask, object_mask(toolkit, second))
    assert len(overlays(result.transcript)) == 2 and result.answer.startswith("Selected 1 object in img_")


def test_no_match_ends_with_an_empty_mask(toolkit):
    model = ScriptedChat(steps=[
        tool_step("refer", expression="the purple star"),
        lambda messages: AIMessage("", tool_calls=[call("no_match", {"reason": "there is no purple star"})]),
    ])
    result = reason_segment(model, toolkit, "scene.png", "Segment the purple star.")
    assert result.stopped == "no_match" and result.answer == "there is no purple star" and result.objects == []
    assert result.mask.shape == (256, 256) and not result.mask.any()
    assert result.tool_calls[-1] == ("no_match", {"reason": "there is no purple star"}, True)


def test_calls_after_the_ending_one_are_answered_not_run(toolkit):
    model = ScriptedChat(steps=[lambda messages: AIMessage("", tool_calls=[
        call("no_match", {"reason": "none"}, id="c1"), call("refer", {"image": image_of(messages),
                                                                       "expression": "the cross"}, id="c2")])])
    result = reason_segment(model, toolkit, "scene.png", "Segment the purple star.")
    answers = [(m.tool_call_id, m.status, m.content) for m in result.transcript if isinstance(m, ToolMessage)]
    assert answers == [("c1", "success", "Nothing matches: none."), ("c2", "error", "not run: the task ended with "
                                                                                     "no_match")]
    assert [c[0] for c in result.tool_calls] == ["no_match"]  # the refer never ran


def test_the_step_limit_stops_the_loop(toolkit):
    model = ScriptedChat(steps=[
        lambda messages: AIMessage("I think it is the cross."),
        tool_step("refer", expression="the cross"),
        tool_step("refer", expression="the blue cross"),
    ])
    result = reason_segment(model, toolkit, "scene.png", "Find the cross.", max_steps=3)
    assert result.stopped == "step_limit" and result.objects == [] and not result.mask.any()
    assert result.answer == "No selection within 3 steps." and len(result.tool_calls) == 2
    assert result.transcript[3].content == NUDGE  # a plain-text reply is answered with a reminder
    with pytest.raises(ValueError, match="max_steps"):
        reason_segment(model, toolkit, "scene.png", "Find the cross.", max_steps=0)


def test_malformed_tool_calls_become_error_messages_and_the_loop_goes_on(toolkit, scene):
    elsewhere = toolkit.refer(image=data_url(scene.image), expression="the cross")

    def malformed(messages):
        image = image_of(messages)
        return AIMessage("", tool_calls=[
            call("erase_disk", {}, id="c1"),
            call("select", {"image": image, "ids": ["obj_99999"]}, id="c2"),
            call("select", {"image": elsewhere.image, "ids": [elsewhere.objects[0].id]}, id="c3"),
            call("no_match", {"reason": 7}, id="c4"),
        ], invalid_tool_calls=[{"name": "refer", "args": '{"image": ', "id": "c5", "error": "bad JSON",
                                "type": "invalid_tool_call"}])

    model = ScriptedChat(steps=[malformed, tool_step("refer", expression="the cross"), select_step()])
    result = reason_segment(model, toolkit, "scene.png", "Find the cross.")
    assert result.stopped == "selected" and len(result.objects) == 1
    errors = [m for m in result.transcript if isinstance(m, ToolMessage) and m.status == "error"]
    assert [m.tool_call_id for m in errors] == ["c1", "c2", "c3", "c4", "c5"]
    expected = ["bad_argument: unknown tool 'erase_disk'", "not_found: unknown or expired handle 'obj_99999'",
                f"bad_argument: select objects of {image_of(result.transcript)}, the image of the question",
                "bad_argument: reason: Input should be a valid string", "bad_argument: the arguments are not valid JSON"]
    for message, text in zip(errors, expected):
        assert message.content.startswith(text), message.content
    assert [ok for _, _, ok in result.tool_calls] == [False] * 5 + [True, True]
    assert result.tool_calls[4] == ("refer", '{"image": ', False)
