"""The pointer probe: questions with their object tokens and targets, and a two-tower probe that learns exactly when
the object content answers the question."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from mllm.objects import ObjectTokens

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
pointer_probe = pytest.importorskip("pointer_probe")

COLOURS = ["red", "blue", "green", "yellow"]


def _questions(count: int, informative: bool, seed: int) -> list:
    """'the <colour> one': the target is the object whose content is that colour's one-hot (or noise)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        colours = torch.randperm(len(COLOURS), generator=g)  # four objects, one of each colour
        target = int(torch.randint(4, (1,), generator=g))
        content = torch.eye(4)[colours] if informative else torch.rand(4, 4, generator=g)
        objects = ObjectTokens(content[None], torch.rand(1, 4, 4, generator=g), torch.rand(1, 4, generator=g),
                               torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 1))
        kind = "referring" if target % 2 else "reasoning"
        out.append(pointer_probe.Question(f"the {COLOURS[int(colours[target])]} one", kind, target, objects))
    return out


@pytest.mark.parametrize("informative, low, high", [(True, 0.95, 1.0), (False, 0.0, 0.45)])
def test_probe_learns_only_what_the_content_tells(informative, low, high):
    accuracy, per_kind = pointer_probe.probe(_questions(300, informative, 0), _questions(100, informative, 1),
                                             lambda o: o.queries[0], steps=300, hidden=32)
    assert low <= accuracy <= high  # chance is 0.25
    assert set(per_kind) == {"reasoning", "referring"}


def test_collect_gives_each_question_its_object_tokens_and_target():
    from glee_core.modeling.glee import GleeModel

    model = GleeModel.from_pretrained("nano").eval()
    questions = pointer_probe.collect(model, "val", 2, seed=0, progress=False)
    assert questions, "nano shows some target of two val scenes"
    variants = pointer_probe.content_variants(model.pixel_decoder.mask_features.out_channels)
    q = questions[0]
    k = pointer_probe.NUM_OBJECTS
    dims = {name: f(q.objects).shape for name, f in variants.items()}
    assert dims["colour + class probs"] == (k, 3 + 8) and dims["query"] == (k, model.config.hidden_dim)
    assert 0 <= q.target < k and q.kind in ("reasoning", "referring")
    probs = q.objects.regions[0, :, -8:]  # the class probabilities end the regions; their max is the score
    torch.testing.assert_close(probs.amax(-1), q.objects.scores[0])
