"""LLaVA conversation json (``llava_instruct_150k.json``, ``llava_v1_5_mix665k.json``, ...) → Conversations.

Rules checked: turns alternate ``human`` / ``gpt`` starting with ``human``; an item with an ``image`` has
exactly one ``<image>`` and it is in the first human turn; a text-only item has none. As LLaVA's loader does,
the token is stripped and re-inserted at the front: ``"<image>\\n" + text.strip()``. ``id`` may be a str or an
int (some mix665k items); it is kept as a str.
"""
from __future__ import annotations

from pathlib import Path

from mllm.tokens import IMAGE_TOKEN
from train.data.readers._fields import Where, load_json, records
from train.data.records import Conversation

ROLES = ("human", "gpt")


def _turns(where: Where, item: dict, has_image: bool) -> list[tuple[str, str]]:
    turns = []
    for index, turn in enumerate(where.items(item, "conversations", dict)):
        role = where.field(turn, "from", str)
        if role != ROLES[index % 2]:
            raise where.error(f"'conversations'[{index}] is from {role!r}, expected {ROLES[index % 2]!r} (turns alternate, human first)")
        turns.append((role, where.field(turn, "value", str)))
    if not turns:
        raise where.error("'conversations' is empty")
    counts = [text.count(IMAGE_TOKEN) for _, text in turns]
    if not has_image:
        if sum(counts):
            raise where.error(f"has no 'image' but its turns contain {IMAGE_TOKEN}")
        return turns
    if counts[0] != 1 or sum(counts) != 1:
        raise where.error(f"must contain {IMAGE_TOKEN} exactly once, in the first human turn (found {counts})")
    turns[0] = ("human", IMAGE_TOKEN + "\n" + turns[0][1].replace(IMAGE_TOKEN, "").strip())
    return turns


def read_llava(json_path: str | Path, image_root: str | Path, *, check_images: bool = True) -> list[Conversation]:
    """Read every conversation in file order; images resolve to ``image_root / image``."""
    json_path = Path(json_path)
    top = Where(json_path, "top level")
    data = {"items": top.check(load_json(json_path), list, "the file content")}
    out = []
    for where, item in records(top, data, "items"):
        item_id = item.get("id")
        if isinstance(item_id, bool) or not isinstance(item_id, (str, int)):
            raise where.error(f"'id' must be a str (or int), got {type(item_id).__name__}")
        image = None
        if "image" in item:
            image = Path(image_root) / where.field(item, "image", str)
            if check_images:
                where.require_image(image)
        out.append(Conversation(str(item_id), image, _turns(where, item, image is not None)))
    return out
