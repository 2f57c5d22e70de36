"""``gleekit eval reasonseg --agent``: an LLM agent behind a local fake OpenAI-compatible endpoint, driving the
reasoning loop over nano, scored like the trained path, with how its queries ended."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from eval.benchmarks.reasonseg import ReasonRecord, ReasonSegBenchmark
from eval.models import EvalModel, weights_sha256
from gleekit.cli import app
from glee_core.modeling.glee import bundled_model_dir
from tests.agents.fake_openai import FakeOpenAI, loop_reply, turns
from train.data.shapeworld.export import write_shapeworld


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("reasonseg")
    write_shapeworld(root, "reasoning", "test", 1, seed=4, progress=False)
    return root


def invoke(data_root, base_url: str, *args: str):
    return CliRunner().invoke(app, ["eval", "reasonseg", "--data-root", str(data_root), "--split", "test",
                                    "--agent-base-url", base_url, *args])


def test_agent_is_scored_with_its_stop_reasons(data_root, tmp_path):
    queries = []

    def reply(body):  # the second query ends with no_match, the others select
        if turns(body) == 0:
            queries.append(body)
        return loop_reply(body, finish="no_match" if len(queries) == 2 else "select")

    with FakeOpenAI(reply) as server:
        result = invoke(data_root, server.base_url, "--agent", "openai:fake", "--limit", "3",
                        "--json-out", str(tmp_path / "agent.json"))
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "agent.json").read_text())
    assert report["counts"] == {**report["counts"], "overall": 3, "agent selected": 2, "agent no_match": 1}
    assert set(report["metrics"]) == {f"{g} {m}" for g in ("overall", "short", "long") for m in ("gIoU", "cIoU")}
    assert all(0 <= report["metrics"][f"overall {m}"] <= 1 for m in ("gIoU", "cIoU"))
    model = report["model"]
    assert model["kind"] == "agent" and model["sha256"] == weights_sha256([bundled_model_dir("nano")])
    assert model["source"] == f"openai:fake at {server.base_url} (at most 6 steps) over nano"
    assert model["input"]["min_size"] > 0 and report["weights_complete"] is True
    assert "overall gIoU" in result.output and len(server.requests) == 6


def test_agent_errors_end_the_run_clearly(data_root):
    with FakeOpenAI(lambda body: (401, {"error": {"message": "Incorrect API key provided"}})) as server:
        refused = invoke(data_root, server.base_url, "--agent", "openai:fake", "--limit", "1")
    assert refused.exit_code == 2 and "HTTP 401: Incorrect API key provided" in " ".join(refused.output.split())
    unknown = invoke(data_root, server.base_url, "--agent", "gpt-4o", "--limit", "1")
    assert unknown.exit_code == 2 and "the agent must be 'openai:MODEL'" in " ".join(unknown.output.split())


def test_an_agent_answers_refer_and_reason_with_its_selection():
    mask = np.zeros((8, 8), bool)
    mask[2:4, 3:6] = True
    answers = {"cup": SimpleNamespace(mask=mask, stopped="selected"),
               "unicorn": SimpleNamespace(mask=np.zeros((8, 8), bool), stopped="no_match")}
    agent = EvalModel("agent", lambda image, question: answers[question], "stub", "", True, "stub")
    image = np.zeros((8, 8, 3), np.uint8)
    assert agent.reason(image, "cup")[1] == "selected" and agent.reason(image, "unicorn")[1] == "no_match"
    box, found = agent.refer(image, "cup")
    np.testing.assert_array_equal(found, mask)
    assert box.tolist() == [3, 2, 6, 4] and agent.refer(image, "unicorn")[0] is None


def test_stop_reasons_are_counted_only_for_agents():
    benchmark = ReasonSegBenchmark.__new__(ReasonSegBenchmark)
    records = [ReasonRecord("a", False, 3, 4, "selected"), ReasonRecord("b", True, 0, 5, "step_limit"),
               ReasonRecord("c", True, 2, 2, "selected")]
    assert benchmark.score(records).counts == {"overall": 3, "short": 1, "long": 2, "agent selected": 2,
                                               "agent step_limit": 1}
    trained = [ReasonRecord(r.name, r.is_sentence, r.intersection, r.union) for r in records]
    assert benchmark.score(trained).counts == {"overall": 3, "short": 1, "long": 2}
