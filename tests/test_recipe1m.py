"""Recipe1M reader: exact counts on a hand-made tree, and one clear error per kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from malm.data.recipe1m import (Recipe1MError, check_root, format_check, image_path, load_json,
                                load_root)
from recipe1m_fixtures import STANDARD_MISSING, image_file, recipe, standard_recipes, write_tree


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "r1m", standard_recipes(), missing=STANDARD_MISSING)


def _layer1(root: Path) -> list[dict]:
    return json.loads((root / "layer1.json").read_text())


def _write(root: Path, name: str, obj) -> None:
    (root / name).write_text(json.dumps(obj))


def test_check_root_counts_exactly(tree: Path) -> None:
    rep = check_root(tree)
    assert rep == {
        "train": {"recipes": 6, "images_listed": 6, "images_found": 5, "images_missing": 1,
                  "pairs": 4, "text_only": 2},
        "val": {"recipes": 3, "images_listed": 3, "images_found": 3, "images_missing": 0,
                "pairs": 3, "text_only": 0},
        "test": {"recipes": 3, "images_listed": 3, "images_found": 3, "images_missing": 0,
                 "pairs": 3, "text_only": 0},
    }
    table = format_check(rep)
    assert "images_missing" in table and table.splitlines()[-1].split() == \
        ["total", "12", "12", "11", "1", "10", "2"]


def test_pairs_sorted_and_paths(tree: Path) -> None:
    data = load_root(tree)
    pairs = data.pairs("train")
    assert [r.id for r in pairs] == sorted(r.id for r in pairs)
    assert [len(r.found) for r in pairs] == [1, 2, 1, 1]
    assert Path(pairs[0].found[0]) == image_path(tree, "train", pairs[0].images[0])
    assert {r.id for r in data.text_only("train")} == {f"{5:010x}", f"{6:010x}"}


def test_split_dir_overrides_partition(tree: Path, tmp_path: Path) -> None:
    lists = tmp_path / "splits"
    lists.mkdir()
    ids = [f"{i:010x}" for i in range(1, 13)]
    # recipe 7 (val partition) moves to train; recipe 3 is listed nowhere -> text-only
    (lists / "train.txt").write_text("\n".join([ids[0], ids[1], ids[3], ids[6]]) + "\n")
    (lists / "val.txt").write_text("\n".join(ids[7:9]) + "\n")
    (lists / "test.txt").write_text("\n".join(ids[9:12]) + "\n")
    data = load_root(tree, lists)
    assert [r.id for r in data.pairs("train")] == [ids[0], ids[1], ids[3], ids[6]]
    assert ids[2] in {r.id for r in data.text_only("train")}
    assert len(data.pairs("val")) == 2
    (lists / "test.txt").write_text("ffffffffff\n")
    with pytest.raises(Recipe1MError, match=r"test\.txt.*ffffffffff.*not in layer1"):
        load_root(tree, lists)


# ------------------------------------------------------------------------------- bad inputs
def test_truncated_json(tree: Path) -> None:
    raw = (tree / "layer1.json").read_bytes()
    (tree / "layer1.json").write_bytes(raw[: len(raw) * 2 // 3])
    with pytest.raises(Recipe1MError) as e:
        check_root(tree)
    msg = str(e.value)
    assert "layer1.json" in msg and "truncated" in msg and "line 1 column" in msg
    assert "in record #" in msg and "(id " in msg


def test_non_json(tree: Path) -> None:
    (tree / "layer2.json").write_text("<html><body>Please log in</body></html>")
    with pytest.raises(Recipe1MError, match=r"layer2\.json: is not JSON \(it starts with .<html>"):
        check_root(tree)


def test_json_syntax_error_names_record(tree: Path) -> None:
    text = (tree / "layer1.json").read_text()
    rid = f"{3:010x}"
    i = text.index(f'"id": "{rid}"')
    (tree / "layer1.json").write_text(text[:i] + "'bad'," + text[i:])
    with pytest.raises(Recipe1MError, match=rf"layer1\.json: has a JSON syntax error.*; in record #2 \(id {rid}\)"):
        check_root(tree)


def test_missing_field(tree: Path) -> None:
    l1 = _layer1(tree)
    del l1[4]["instructions"]
    _write(tree, "layer1.json", l1)
    with pytest.raises(Recipe1MError,
                       match=rf"layer1\.json: record #4 \(id '{5:010x}'\): missing field 'instructions'"):
        check_root(tree)


def test_layer2_id_not_in_layer1(tree: Path) -> None:
    l2 = json.loads((tree / "layer2.json").read_text())
    l2.append({"id": "deadbeef00", "images": []})
    _write(tree, "layer2.json", l2)
    with pytest.raises(Recipe1MError,
                       match=rf"layer2\.json: record #{len(l2) - 1} \(id 'deadbeef00'\): id not in layer1"):
        check_root(tree)


def test_duplicate_id(tree: Path) -> None:
    l1 = _layer1(tree)
    l1.append(dict(l1[2]))
    _write(tree, "layer1.json", l1)
    with pytest.raises(Recipe1MError,
                       match=rf"layer1\.json: record #12 \(id '{3:010x}'\): duplicate id: also record #2"):
        check_root(tree)


def test_unknown_partition(tree: Path) -> None:
    l1 = _layer1(tree)
    l1[7]["partition"] = "validation"
    _write(tree, "layer1.json", l1)
    with pytest.raises(Recipe1MError, match=r"record #7 .*unknown partition 'validation'"):
        check_root(tree)


@pytest.mark.parametrize("field,value,expect", [
    ("title", "   ", "empty title"),
    ("ingredients", [], "empty ingredients"),
    ("instructions", [{"text": ""}, {"text": "  "}], "empty instructions"),
])
def test_empty_fields(tree: Path, field: str, value, expect: str) -> None:
    l1 = _layer1(tree)
    l1[1][field] = value
    _write(tree, "layer1.json", l1)
    with pytest.raises(Recipe1MError, match=rf"layer1\.json: record #1 \(id '{2:010x}'\): {expect}"):
        check_root(tree)


def test_non_utf8(tree: Path) -> None:
    raw = (tree / "layer1.json").read_bytes()
    off = raw.index(b"Grilled")
    (tree / "layer1.json").write_bytes(raw[:off] + b"\xff\xfe" + raw[off:])
    with pytest.raises(Recipe1MError) as e:
        check_root(tree)
    msg = str(e.value)
    assert "layer1.json" in msg and f"not valid UTF-8 at byte offset {off}" in msg
    assert f"record #3 (id {4:010x})" in msg


def test_bad_records_skipped_when_asked(tree: Path) -> None:
    l1 = _layer1(tree)
    l1[1]["title"] = ""
    l1[7]["partition"] = "nope"
    _write(tree, "layer1.json", l1)
    data = load_root(tree, on_bad_record="skip")
    assert len(data.recipes) == 10 and sum(data.dropped.values()) == 2
    # layer2 still names the dropped recipes: not a second error
    assert check_root(tree, on_bad_record="skip")["train"]["recipes"] == 5


def test_missing_images_counted_not_fatal(tmp_path: Path) -> None:
    recs = [recipe(1, "train", 3), recipe(2, "train", 1), recipe(3, "test", 2)]
    root = write_tree(tmp_path / "r", recs, missing={"0000010001.jpg", "0000020000.jpg"})
    rep = check_root(root)
    assert rep["train"] == {"recipes": 2, "images_listed": 4, "images_found": 2,
                            "images_missing": 2, "pairs": 1, "text_only": 1}
    assert rep["test"]["images_found"] == 2 and rep["val"]["recipes"] == 0


def test_det_ingrs_validated(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "r", standard_recipes(), det_ingrs=True)
    det = json.loads((root / "det_ingrs.json").read_text())
    det[2]["valid"] = det[2]["valid"][:-1]
    _write(root, "det_ingrs.json", det)
    with pytest.raises(Recipe1MError, match=r"det_ingrs\.json: record #2 .*'valid' flags"):
        check_root(root)


def test_load_json_ok_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('[{"id": "x"}]')
    assert load_json(tmp_path / "a.json") == [{"id": "x"}]
    with pytest.raises(Recipe1MError, match="cannot read"):
        load_json(tmp_path / "nope.json")
    with pytest.raises(Recipe1MError, match=r"layer1\.json: file not found"):
        check_root(tmp_path)


def test_fixture_layout(tree: Path) -> None:
    assert image_file(tree, "train", "0000010000.jpg").is_file()
    assert not image_file(tree, "train", "0000060000.jpg").exists()
