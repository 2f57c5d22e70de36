"""read_json: content of a user's JSON file, or errors that name the file and say what is wrong."""
from __future__ import annotations

import pytest

from glee_core.json_file import read_json


class BadFile(Exception):
    pass


def test_reads_utf8_json(tmp_path):
    path = tmp_path / "ok.json"
    path.write_text('{"name": "cœur", "values": [1, 2.5]}', encoding="utf-8")
    assert read_json(path, "settings file") == {"name": "cœur", "values": [1, 2.5]}


def test_missing_file_names_what_and_where(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"settings file not found: .*absent\.json"):
        read_json(tmp_path / "absent.json", "settings file")


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x00broken", b""])
def test_bad_content_raises_the_given_error_naming_the_file(tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(BadFile, match=r"bad\.json is not a JSON file: "):
        read_json(path, "settings file", BadFile)
    with pytest.raises(ValueError, match=r"bad\.json is not a JSON file: "):
        read_json(path, "settings file")
