"""No package hard-codes a CUDA device: no ``.cuda(...)`` calls and no ``"cuda"`` / ``"cuda:N"`` literals."""
from __future__ import annotations

import ast
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("glee_core", "gleekit", "adapters", "mllm", "agents", "train", "eval")
DEVICE_LITERAL = re.compile(r"cuda(:\d+)?")


def hardcoded_devices(source: str) -> list[tuple[int, str]]:
    """(line, what) for every ``.cuda(`` call and every string literal naming a CUDA device."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "cuda":
            found.append((node.lineno, ".cuda("))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and DEVICE_LITERAL.fullmatch(node.value):
            found.append((node.lineno, repr(node.value)))
    return sorted(found)


def test_detector_finds_both_patterns():
    source = 'x = y.cuda()\nz = torch.device("cuda")\nw = x.to(\'cuda:1\')\nhelp = "e.g. cpu or cuda:0"\n'
    assert hardcoded_devices(source) == [(1, ".cuda("), (2, "'cuda'"), (3, "'cuda:1'")]


def test_no_hardcoded_device():
    files = [path for package in PACKAGES for path in sorted((REPO_ROOT / package).rglob("*.py"))]
    assert len(files) > 10
    offenders = [f"{path.relative_to(REPO_ROOT)}:{line}: {what}"
                 for path in files for line, what in hardcoded_devices(path.read_text(encoding="utf-8"))]
    assert offenders == []
