"""read_refer and load_pickle_safely: refer layout (DATA_FORMATS.md §3), REFER split rules, restricted unpickling."""
from __future__ import annotations

import pickle
import pickletools
import struct

import numpy as np
import pytest

from train.data.readers import DatasetFormatError, MissingImageError, load_pickle_safely, read_refer, split_matches


def py2_pickle(obj) -> bytes:
    """Protocol-2 pickle as Python 2 writes it: ``str`` as (latin1) BINSTRING opcodes, no globals."""
    def dump(value) -> bytes:
        if isinstance(value, bool) or value is None:
            raise TypeError(value)
        if isinstance(value, int):
            return pickle.BININT + struct.pack("<i", value)
        if isinstance(value, str):
            raw = value.encode("latin1")
            return pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw if len(raw) < 256 else pickle.BINSTRING + struct.pack("<i", len(raw)) + raw
        if isinstance(value, list):
            return pickle.EMPTY_LIST + (pickle.MARK + b"".join(map(dump, value)) + pickle.APPENDS if value else b"")
        if isinstance(value, dict):
            body = b"".join(dump(k) + dump(v) for k, v in value.items())
            return pickle.EMPTY_DICT + (pickle.MARK + body + pickle.SETITEMS if value else b"")
        raise TypeError(value)
    return pickle.PROTO + b"\x02" + dump(obj) + pickle.STOP


def ref(ref_id, ann_id, image_id, split, sents, category_id=62):
    sent_ids = [ref_id * 10 + i for i in range(len(sents))]
    return {"ref_id": ref_id, "ann_id": ann_id, "image_id": image_id, "category_id": category_id, "split": split,
            "sent_ids": sent_ids, "file_name": f"COCO_train2014_{image_id:012d}_{ann_id}.jpg",
            "sentences": [{"sent_id": i, "sent": s.lower(), "raw": s, "tokens": s.lower().split()} for i, s in zip(sent_ids, sents)]}


def refs_data() -> list[dict]:
    return [
        ref(77, 9001, 4711, "testB", ["Chair on the left", "empty wooden seat"]),
        ref(78, 9002, 4711, "train", ["right chair"]),
        ref(79, 9003, 4712, "testA", ["man in red"], category_id=1),
        ref(80, 9003, 4712, "val", ["Café guy"], category_id=1),
    ]


def instances_data() -> dict:
    return {
        "images": [{"id": 4711, "file_name": "COCO_train2014_000000004711.jpg", "width": 640, "height": 480},
                   {"id": 4712, "file_name": "COCO_train2014_000000004712.jpg", "width": 10, "height": 8}],
        "annotations": [
            {"id": 9001, "image_id": 4711, "category_id": 62, "iscrowd": 0, "area": 7200.0,
             "bbox": [120.0, 200.5, 80.0, 90.0], "segmentation": [[120.0, 200.5, 200.0, 200.5, 200.0, 290.5, 120.0, 290.5]]},
            {"id": 9002, "image_id": 4711, "category_id": 62, "iscrowd": 0, "area": 100.0,
             "bbox": [300, 200, 10, 10], "segmentation": [[300, 200, 310, 200, 310, 210, 300, 210]]},
            {"id": 9003, "image_id": 4712, "category_id": 1, "iscrowd": 0, "area": 16.0,
             "bbox": [2, 1, 4, 4], "segmentation": [[2, 1, 6, 1, 6, 5, 2, 5]]},
        ],
        "categories": [{"id": 1, "name": "person", "supercategory": "person"},
                       {"id": 62, "name": "chair", "supercategory": "furniture"}],
    }


@pytest.fixture
def refer_root(tmp_path, make_image, make_json):
    def write(refs=None, instances=None):
        folder = tmp_path / "refcoco"
        make_json(folder / "instances.json", instances_data() if instances is None else instances)
        (folder / "refs(unc).p").write_bytes(py2_pickle(refs_data() if refs is None else refs))
        for image in instances_data()["images"]:
            make_image(tmp_path / "images" / "mscoco" / "images" / "train2014" / image["file_name"])
        return tmp_path
    return write


def test_values(refer_root):
    records = read_refer(refer_root())
    assert [r.ref_id for r in records] == [77, 78, 79, 80]
    first = records[0]
    assert first.sentences == ["chair on the left", "empty wooden seat"] and first.sent_ids == [770, 771]
    assert (first.split, first.category_id) == ("testB", 62)
    assert first.image.path.name == "COCO_train2014_000000004711.jpg"  # from instances.json, not the fake ref name
    assert first.image.path.parent.parts[-4:] == ("images", "mscoco", "images", "train2014")
    (target,) = first.image.instances
    assert target.ann_id == 9001
    np.testing.assert_array_equal(target.box, [120.0, 200.5, 200.0, 290.5])
    assert [inst.ann_id for inst in records[1].image.instances] == [9002]
    assert records[3].sentences == ["café guy"]  # python-2 str decoded as latin1
    assert records[2].image.instances[0].mask(8, 10).sum() == 16


@pytest.mark.parametrize("split, expected", [
    ("testA", [79]), ("testB", [77]), ("test", [77, 79]), ("train", [78]), ("val", [80]), (None, [77, 78, 79, 80]),
])
def test_split_filtering(refer_root, split, expected):
    assert [r.ref_id for r in read_refer(refer_root(), split=split)] == expected


def test_split_rules_and_unknown_split():
    assert split_matches("testAB", "testA") and split_matches("testAB", "testAB") and not split_matches("testA", "testAB")
    assert not split_matches("testB", "testA") and split_matches("testC", "test")
    with pytest.raises(ValueError, match="unknown refer split 'tst'"):
        split_matches("train", "tst")


def test_missing_image_only_for_selected_refs(refer_root):
    root = refer_root()
    (root / "images" / "mscoco" / "images" / "train2014" / "COCO_train2014_000000004712.jpg").unlink()
    assert [r.ref_id for r in read_refer(root, split="train")] == [78]
    with pytest.raises(MissingImageError, match=r"refs\[2\] \(ref_id 79\): image not found: .*000000004712.jpg"):
        read_refer(root, split="testA")


def _mutated(index, key, value):
    refs = refs_data()
    if value is KeyError:
        del refs[index][key]
    else:
        refs[index][key] = value
    return refs


@pytest.mark.parametrize("refs, problem", [
    (_mutated(1, "ann_id", 5), r"refs\[1\] \(ref_id 78\): ann_id 5 is not in .*instances.json"),
    (_mutated(1, "image_id", 4712), r"refs\[1\] \(ref_id 78\): ann_id 9002 belongs to image_id 4711, not 4712"),
    (_mutated(0, "category_id", 1), r"refs\[0\] \(ref_id 77\): category_id 1 differs from its annotation's 62"),
    (_mutated(2, "sentences", []), r"refs\[2\] \(ref_id 79\): 'sentences' is empty"),
    (_mutated(3, "split", KeyError), r"refs\[3\] \(ref_id 80\): missing key 'split'"),
    (_mutated(0, "ann_id", "9001"), r"refs\[0\] \(ref_id 77\): 'ann_id' must be int"),
    ([[1, 2]], r"refs\[0\]: ref must be dict"),
], ids=["unknown_ann", "wrong_image", "category_mismatch", "no_sentences", "missing_split", "wrong_type", "not_a_dict"])
def test_malformed_refs(refer_root, refs, problem):
    root = refer_root(refs)
    with pytest.raises(DatasetFormatError, match=r"refs\(unc\)\.p: " + problem):
        read_refer(root)


def test_bad_instances_json_names_it(refer_root):
    instances = instances_data()
    instances["annotations"][2]["segmentation"] = [[2, 1, 6]]
    with pytest.raises(DatasetFormatError, match=r"instances.json: annotations\[2\] \(id 9003\): .*even number"):
        read_refer(refer_root(instances=instances))


# --- the restricted unpickler -------------------------------------------------------------------------------

def _malicious_pickles() -> dict[str, bytes]:
    """Pickles that would call os.system('echo pwned') if loaded with pickle.load (never done here)."""
    protocol0 = pickle.GLOBAL + b"os\nsystem\n" + pickle.MARK + pickle.STRING + b"'echo pwned'\n" + pickle.TUPLE + pickle.REDUCE + pickle.STOP
    protocol4 = (pickle.PROTO + b"\x04" + pickle.SHORT_BINUNICODE + b"\x02os" + pickle.SHORT_BINUNICODE + b"\x06system"
                 + pickle.STACK_GLOBAL + pickle.SHORT_BINUNICODE + b"\x0aecho pwned" + pickle.TUPLE1 + pickle.REDUCE + pickle.STOP)
    return {"GLOBAL": protocol0, "STACK_GLOBAL": protocol4}


@pytest.mark.parametrize("opcode", ["GLOBAL", "STACK_GLOBAL"])
def test_unpickler_refuses_globals(tmp_path, opcode, capfd):
    data = _malicious_pickles()[opcode]
    listing = "\n".join(f"{op.name} {arg}" for op, arg, _ in pickletools.genops(data))
    assert opcode in listing and "REDUCE" in listing  # the pickle really references a callable and calls it
    path = tmp_path / "refs(unc).p"
    path.write_bytes(data)
    with pytest.raises(DatasetFormatError, match=r"refs\(unc\)\.p: pickle: references the global os\.system"):
        load_pickle_safely(path)
    assert "pwned" not in capfd.readouterr().out


def test_unpickler_reads_plain_data_and_rejects_garbage(tmp_path):
    path = tmp_path / "plain.p"
    path.write_bytes(pickle.dumps([{"a": [1, 2.5, "x", None, True]}, (3, b"raw")], protocol=4))
    assert load_pickle_safely(path) == [{"a": [1, 2.5, "x", None, True]}, (3, b"raw")]
    path.write_bytes(py2_pickle([{"sent": "na\xefve"}])[:-3])
    with pytest.raises(DatasetFormatError, match="not a valid pickle"):
        load_pickle_safely(path)
