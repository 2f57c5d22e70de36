"""Property-based fuzzing of all surfaces: malformed tool calls never crash and always get typed errors.

Default runs: 4 surfaces × 300 calls (1,200). ``-m slow``: 4 × 2,600 (10,400). Every answer must be a
success or one of the typed errors other than ``internal`` (an ``internal`` error means an unexpected
exception inside gleekit: a bug). Afterwards the MCP server must still answer a valid call.
"""
from __future__ import annotations

import json

import anyio.from_thread
import mcp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import ToolMessage

from agents.core import TOOL_SPECS, GleeToolkit
from agents.langchain import glee_tools
from agents.mcp_server import build_server
from agents.openai import dispatch

TYPED = ("bad_argument", "not_found", "too_large", "timeout")
TOOLS = sorted(TOOL_SPECS)

numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**12, 10**12),
                    st.sampled_from([0, 1, 5, 20, 63.5, -1, 1e308, -0.0]))
texts = st.one_of(st.text(max_size=40), st.sampled_from(["", " ", "circle", "square", "the circle", "x" * 5000,
                                                          "\x00", "ümlaut ✓", "a" * 600]))
images = st.one_of(
    st.sampled_from(["img_1", "small.png", "scene.png", "../scene.png", "/etc/passwd", "img_99999", "obj_1",
                     "ovl_1", "data:image/png;base64,AAAA", "data:,", "http://127.0.0.1:9/a.png", "file:///etc/passwd",
                     "sub/../small.png", "", "   ", "C:\\Windows\\win.ini", "small.png\x00", "A" * 100]),
    texts, numbers, st.none(), st.lists(st.text(max_size=5), max_size=2),
)
points = st.fixed_dictionaries({"x": numbers, "y": numbers}, optional={"positive": st.one_of(st.booleans(), texts)})
boxes = st.fixed_dictionaries({"x1": numbers, "y1": numbers, "x2": numbers, "y2": numbers})
json_values = st.recursive(st.one_of(st.none(), st.booleans(), numbers, texts),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
                           max_leaves=12)
fields = {
    "image": images,
    "categories": st.one_of(st.lists(texts, max_size=6), texts, st.lists(numbers, max_size=3),
                            st.lists(st.sampled_from(["circle", "square", "star"]), min_size=1, max_size=3)),
    "expression": texts,
    "min_score": numbers,
    "max_objects": numbers,
    "overlay": st.one_of(st.booleans(), texts),
    "overlay_style": st.one_of(st.sampled_from(["boxes", "numbered"]), texts),
    "ids": st.one_of(st.lists(st.sampled_from(["obj_1", "obj_2", "obj_3", "obj_99999", "img_1", "ovl_1"]), max_size=3),
                     texts, st.lists(texts, max_size=2)),
    "points": st.one_of(st.lists(points, max_size=4), texts),
    "boxes": st.one_of(st.lists(boxes, max_size=3), numbers),
    "frames": st.one_of(st.lists(images, max_size=3), texts),
    "video": st.one_of(texts, st.sampled_from([".", "clip", "/tmp"])),
    "images": st.one_of(st.lists(images, max_size=3), texts),
    "expressions": st.one_of(st.lists(texts, max_size=3), texts),
    "object": st.sampled_from(["obj_1", "obj_2", "obj_99999", "img_1", "ovl_1", "", "obj_x"]),
    "first": st.sampled_from(["obj_1", "obj_2", "obj_3", "obj_99999", "img_1"]),
    "second": st.sampled_from(["obj_1", "obj_2", "obj_3", "obj_99999", "img_1"]),
    "padding": numbers,
}
arguments = st.one_of(
    st.fixed_dictionaries({}, optional=fields),
    st.fixed_dictionaries({}, optional=fields).flatmap(
        lambda d: st.dictionaries(texts, json_values, max_size=2).map(lambda extra: {**extra, **d})),
    json_values,
)
VALID = {
    "detect": {"image": "img_1", "categories": ["circle", "star"], "min_score": 0.0, "max_objects": 3},
    "segment": {"image": "small.png", "categories": ["square"], "overlay": True},
    "refer": {"image": "img_1", "expression": "the circle"},
    "visual_prompt": {"image": "img_1", "points": [{"x": 10, "y": 12}, {"x": 50, "y": 50, "positive": False}],
                      "boxes": [{"x1": 5, "y1": 5, "x2": 40, "y2": 30}]},
    "track": {"frames": ["img_1", "small.png"], "expression": "the star", "min_score": 0.0},
    "select": {"image": "img_1", "ids": ["obj_1"]},
    "refine": {"object": "obj_2", "points": [{"x": 10, "y": 12}]},
    "crop": {"object": "obj_2", "padding": 4},
    "compare": {"first": "obj_2", "second": "obj_3"},
}


def mutate(tool: str):
    """A valid call of ``tool`` with zero to two fields replaced by fuzz values."""
    keys = st.lists(st.sampled_from(sorted(fields)), max_size=2, unique=True)
    return keys.flatmap(lambda ks: st.fixed_dictionaries({k: fields[k] for k in ks}).map(
        lambda changes: (tool, {**VALID[tool], **changes})))


mutated = st.sampled_from(TOOLS).flatmap(mutate)
calls = st.one_of(st.tuples(st.one_of(st.sampled_from(TOOLS), texts), arguments), mutated, mutated)

SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large, HealthCheck.filter_too_much])


def default_and_slow(count: int, slow_count: int):
    """Two test variants: ``count`` examples by default, ``slow_count`` under ``-m slow``."""
    return pytest.mark.parametrize("examples", [
        pytest.param(count, id=f"{count}"),
        pytest.param(slow_count, id=f"{slow_count}", marks=pytest.mark.slow),
    ])


@pytest.fixture(scope="module")
def fuzz_toolkit(image_root, scene):
    from PIL import Image

    Image.fromarray(scene.image).resize((64, 64)).save(image_root / "small.png")
    toolkit = GleeToolkit(allowed_roots=[image_root])
    assert toolkit.detect(image="small.png", categories=["circle"]).image == "img_1"  # valid calls stay cheap
    yield toolkit
    toolkit.close()


def assert_typed(text: str) -> None:
    assert text.split(":")[0] in TYPED, text
    assert "Traceback" not in text


def fuzz(examples: int, check) -> None:
    settings(max_examples=examples, **SETTINGS)(given(calls)(check))()


@default_and_slow(300, 2600)
def test_core_calls(fuzz_toolkit, examples):
    def check(call):
        outcome = fuzz_toolkit.call(*call)
        if not outcome.ok:
            assert_typed(outcome.text)
            assert outcome.structured()["error"]["type"] == outcome.error.code
    fuzz(examples, check)


@default_and_slow(300, 2600)
def test_openai_dispatch(fuzz_toolkit, examples):
    def check(call):
        name, args = call
        raw = json.dumps(args, allow_nan=True) if not isinstance(args, str) else args
        message = dispatch({"id": "c", "function": {"name": name, "arguments": raw}}, fuzz_toolkit)
        content = json.loads(message["content"])
        assert message["role"] == "tool" and message["tool_call_id"] == "c"
        if not content["ok"]:
            assert content["error"]["type"] in TYPED, content
    fuzz(examples, check)


@default_and_slow(300, 2600)
def test_langchain_tools(fuzz_toolkit, examples):
    tools = {tool.name: tool for tool in glee_tools(fuzz_toolkit)}

    def check(call):
        name, args = call
        tool = tools.get(name, tools["detect"])
        reply = tool.invoke({"name": tool.name, "args": args, "id": "c", "type": "tool_call"}) \
            if isinstance(args, dict) else tool.invoke(args if isinstance(args, (str, dict)) else json.dumps(args))
        text = reply.content if isinstance(reply, ToolMessage) else reply
        if isinstance(reply, ToolMessage) and reply.status == "error" or not text[:1].isdigit() and ":" in text[:14]:
            assert_typed(text)
    fuzz(examples, check)


@default_and_slow(300, 2600)
def test_mcp_server(fuzz_toolkit, examples):
    with anyio.from_thread.start_blocking_portal() as portal, \
            portal.wrap_async_context_manager(mcp.Client(build_server(fuzz_toolkit))) as client:

        def check(call):
            name, args = call
            if not isinstance(args, dict):
                args = {"value": args}
            result = portal.call(client.call_tool, name if isinstance(name, str) else str(name), args)
            if result.is_error:
                assert_typed(result.content[0].text)

        fuzz(examples, check)
        alive = portal.call(client.call_tool, "detect", {"image": "img_1", "categories": ["circle"]})
        assert alive.is_error is False and alive.structured_content["image"] == "img_1"


def test_fuzz_strategies_reach_the_model(fuzz_toolkit):
    """Guard against a fuzz that only ever exercises argument validation: some calls must succeed."""
    successes = []

    def check(call):
        successes.append(fuzz_toolkit.call(*call).ok)
    settings(max_examples=300, **SETTINGS)(given(calls)(check))()
    assert 0.05 * len(successes) < sum(successes) < 0.8 * len(successes)
