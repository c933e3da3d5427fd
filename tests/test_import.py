"""`malm data import`: CSV / JSONL recipes into a Recipe1M root. Bad rows are reported with their
row and line numbers and reasons, the good rows pass `check_root`, build a cache and train a tiny
model; ids and drawn splits are stable; --strict stops at the first bad row."""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from malm.data import importer as I
from malm.data.importer import ImportRowError, format_report, import_recipes, split_of
from malm.data.recipe1m import check_root, image_path, load_root
from recipe1m_fixtures import data_config, jpeg_bytes

BAD = "@@BAD@@"  # replaced by a non-UTF-8 byte in the written file


def _png_bytes(seed: int, size=(24, 24)) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def images(tmp_path: Path) -> Path:
    d = tmp_path / "images"
    (d / "sub").mkdir(parents=True)
    (d / "a.jpg").write_bytes(jpeg_bytes(1))
    (d / "b.png").write_bytes(_png_bytes(2))
    (d / "sub" / "c.jpg").write_bytes(jpeg_bytes(3))
    (d / "d.jpeg").write_bytes(jpeg_bytes(4))
    data = jpeg_bytes(5, (80, 60))
    (d / "trunc.jpg").write_bytes(data[: len(data) // 2])
    (d / "text.jpg").write_bytes(b"not an image at all\n")
    (tmp_path / "secret.jpg").write_bytes(jpeg_bytes(6))  # outside --images
    return d


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    path.write_bytes(buf.getvalue().encode("utf-8").replace(BAD.encode(), b"\xff"))
    return path


ING = "2 cups flour\n1 tsp salt"
STEPS = "Mix.\nBake 20 minutes."
HEADER = ["id", "title", "ingredients", "instructions", "images", "split", "notes"]
# (row, line, reason) of each bad row of the CSV below: rows count records, lines the file's lines
# (quoted multi-line cells: row 1 is lines 2-6, a row with ING and STEPS three lines)
CSV_BAD = [(3, 8, I.R_TITLE), (4, 11, I.R_INGRS), (5, 15, I.R_NOT_FOUND), (6, 18, I.R_DECODE),
           (7, 21, I.R_ESCAPE), (8, 24, I.R_ESCAPE), (9, 27, I.R_DUP), (10, 30, I.R_UTF8),
           (12, 34, I.R_SPLIT), (13, 37, I.R_FORMAT), (14, 38, I.R_DECODE), (15, 41, I.R_INSTRS)]


def csv_rows(images: Path) -> list[list[str]]:
    return [
        ["", "Apple Pie", "3 apples, sliced\n1 (9 inch) pie crust\n\n", STEPS, "a.jpg|sub/c.jpg",
         "train", "x"],
        ["r2", "Bean Soup", '["1 can beans", "2 cups water"]', '["Boil.", "Serve."]', "b.png", "val", ""],
        ["r3", "   ", ING, STEPS, "a.jpg", "", ""],                     # missing title
        ["r4", "Empty", "\n  \n", STEPS, "a.jpg", "", ""],              # no ingredients
        ["r5", "Ghost", ING, STEPS, "nope.jpg", "", ""],                # image not found
        ["r6", "Torn", ING, STEPS, "trunc.jpg", "", ""],                # truncated JPEG
        ["r7", "Escape", ING, STEPS, "../secret.jpg", "", ""],          # ../
        ["r8", "Absolute", ING, STEPS, str(images.parent / "secret.jpg"), "", ""],
        ["r2", "Dup", ING, STEPS, "a.jpg", "", ""],                     # duplicate id
        ["r10", f"Caf{BAD} Latte", ING, STEPS, "a.jpg", "", ""],        # not UTF-8
        ["r11", "Plain Toast", "1 slice bread", "Toast it.", "", "test", ""],   # good, text-only
        ["r12", "Odd", ING, STEPS, "a.jpg", "holdout", ""],             # unknown split
        ["r13", "Short row"],                                           # 2 fields
        ["r14", "Fake", ING, STEPS, "a.jpg;text.jpg", "", ""],          # not an image
        ["r15", "No Steps", ING, "", "a.jpg", "", ""],                  # no instructions
        ["", "Lemon Cake", "2 lemons\n1 cup sugar", "Stir.\nBake.", "d.jpeg ; a.jpg", "train", ""],
    ]


@pytest.fixture
def csv_file(tmp_path: Path, images: Path) -> Path:
    return _write_csv(tmp_path / "recipes.csv", HEADER, csv_rows(images))


def _layer(root: Path, name: str) -> list[dict]:
    return json.loads((root / name).read_text(encoding="utf-8"))


def test_csv_bad_rows_reported_good_rows_imported(tmp_path, images, csv_file):
    out = tmp_path / "root"
    rep = import_recipes(csv_file, images, out, progress=False)
    assert [(b["row"], b["line"], b["reason"]) for b in rep["bad_rows"]] == CSV_BAD
    assert rep["rows"] == 16 and rep["imported"] == 4 and rep["bad"] == 12
    assert rep["bad_by_reason"] == {I.R_ESCAPE: 2, I.R_DECODE: 2, I.R_TITLE: 1, I.R_INGRS: 1,
                                    I.R_NOT_FOUND: 1, I.R_DUP: 1, I.R_UTF8: 1, I.R_SPLIT: 1,
                                    I.R_FORMAT: 1, I.R_INSTRS: 1}
    details = {b["row"]: b["detail"] for b in rep["bad_rows"]}
    assert "also row 2" in details[9] and "b'\\xff'" in details[10] and "line 30" in details[10]
    assert details[5] == "nope.jpg" and "text.jpg" in details[14] and "trunc.jpg" in details[6]
    assert "fields" in details[13]
    assert rep["det_ingrs"] == "heuristic extraction" and rep["ignored_columns"] == ["notes"]
    assert rep["splits"]["train"] == {"recipes": 2, "with_images": 2, "text_only": 0, "images": 4}
    assert rep["splits"]["val"]["with_images"] == 1 and rep["splits"]["test"]["text_only"] == 1
    assert json.loads((out / I.REPORT).read_text()) == json.loads(json.dumps(rep))
    assert not (out / I.INCOMPLETE).exists()

    l1 = {r["id"]: r for r in _layer(out, "layer1.json")}
    assert sorted(r["title"] for r in l1.values()) == ["Apple Pie", "Bean Soup", "Lemon Cake",
                                                       "Plain Toast"]
    pie = next(r for r in l1.values() if r["title"] == "Apple Pie")
    assert len(pie["id"]) == 10 and int(pie["id"], 16) >= 0
    assert [t["text"] for t in pie["ingredients"]] == ["3 apples, sliced", "1 (9 inch) pie crust"]
    assert [t["text"] for t in l1["r2"]["ingredients"]] == ["1 can beans", "2 cups water"]
    assert l1["r2"]["partition"] == "val" and l1["r11"]["partition"] == "test"
    l2 = {r["id"]: [m["id"] for m in r["images"]] for r in _layer(out, "layer2.json")}
    assert "r11" not in l2 and len(l2[pie["id"]]) == 2
    assert l2["r2"][0].endswith(".png") and all(n.endswith(".jpg") for n in l2[pie["id"]])
    # the bytes are copied unchanged, where the reader looks for them
    got = image_path(out, "train", l2[pie["id"]][1]).read_bytes()
    assert got == (images / "sub" / "c.jpg").read_bytes()
    det = {r["id"]: r for r in _layer(out, "det_ingrs.json")}
    assert [t["text"] for t in det[pie["id"]]["ingredients"]] == ["apples", "pie crust"]
    assert det[pie["id"]]["valid"] == [True, True] and set(det) == set(l1)
    # nothing of the refused rows reached the root (the escaping image above all)
    secret = (tmp_path / "secret.jpg").read_bytes()
    assert not any(p.read_bytes() == secret for p in out.rglob("*.jpg"))

    assert check_root(out) == {
        "train": {"recipes": 2, "images_listed": 4, "images_found": 4, "images_missing": 0,
                  "pairs": 2, "text_only": 0},
        "val": {"recipes": 1, "images_listed": 1, "images_found": 1, "images_missing": 0,
                "pairs": 1, "text_only": 0},
        "test": {"recipes": 1, "images_listed": 0, "images_found": 0, "images_missing": 0,
                 "pairs": 0, "text_only": 1},
    }
    assert load_root(out, det_ingrs=True).recipes  # det_ingrs.json validates too

    text = format_report(rep)
    print(text)
    assert "imported 4 of 16 rows" in text and "row 3 (line 8): missing title" in text
    assert "row 10 (line 30): not UTF-8" in text and "det_ingrs: heuristic extraction" in text


def test_jsonl(tmp_path, images):
    lines = [
        {"title": "Pancakes", "ingredients": ["1 cup milk", {"text": "2 eggs"}],
         "instructions": "Whisk.\nFry.", "images": ["a.jpg", "b.png"], "split": "validation"},
        "not json {",
        ["a", "list"],
        {"id": 7, "title": "Waffles", "ingredients": "1 cup flour", "instructions": ["Cook."],
         "image": "sub/c.jpg"},
        {"title": "Nothing", "ingredients": [], "instructions": ["x"]},
        {"title": "Abs", "ingredients": ["x"], "instructions": ["y"], "images": ["/etc/passwd"]},
        {"title": "Typed", "ingredients": [1, 2], "instructions": ["y"]},
        {"title": f"Bad {BAD} byte", "ingredients": ["x"], "instructions": ["y"]},
        {"id": 7, "title": "Again", "ingredients": ["x"], "instructions": ["y"]},
        {"title": "Deep", "ingredients": ["x"], "instructions": ["y"], "images": "sub/../../secret.jpg"},
    ]
    text = "\n".join(x if isinstance(x, str) else json.dumps(x, ensure_ascii=False) for x in lines)
    src = tmp_path / "r.jsonl"
    # a blank line before the last record: rows count records, lines count the file's lines
    src.write_bytes(text.replace("\n{\"title\": \"Deep\"", "\n\n{\"title\": \"Deep\"")
                    .encode().replace(BAD.encode(), b"\xc3\x28"))
    rep = import_recipes(src, images, tmp_path / "out", progress=False)
    assert [(b["row"], b["line"], b["reason"]) for b in rep["bad_rows"]] == [
        (2, 2, I.R_FORMAT), (3, 3, I.R_FORMAT), (5, 5, I.R_INGRS), (6, 6, I.R_ESCAPE),
        (7, 7, I.R_FORMAT), (8, 8, I.R_UTF8), (9, 9, I.R_DUP), (10, 11, I.R_ESCAPE)]
    assert rep["imported"] == 2 and rep["format"] == "jsonl"
    l1 = {r["title"]: r for r in _layer(tmp_path / "out", "layer1.json")}
    assert l1["Waffles"]["id"] == "7" and l1["Pancakes"]["partition"] == "val"
    assert [t["text"] for t in l1["Pancakes"]["ingredients"]] == ["1 cup milk", "2 eggs"]
    assert check_root(tmp_path / "out")["val"]["images_found"] == 2


def test_stable_ids_and_seeded_splits(tmp_path, images):
    rows = [["", f"Dish {i}", f"{i} cups rice\nsalt", "Cook.", "a.jpg" if i % 5 == 0 else "", ""]
            for i in range(300)]
    head = ["id", "title", "ingredients", "instructions", "images", "split"]
    src = _write_csv(tmp_path / "all.csv", head, rows)
    part = _write_csv(tmp_path / "part.csv", head, rows[100:200])   # a subset, in another order
    a = import_recipes(src, images, tmp_path / "a", progress=False)
    b = import_recipes(src, images, tmp_path / "a", progress=False)  # into the same root again
    assert b["replaced_previous_import"] and a["splits"] == b["splits"]
    l1 = _layer(tmp_path / "a", "layer1.json")
    ids = {r["title"]: (r["id"], r["partition"]) for r in l1}
    assert len({i for i, _ in ids.values()}) == 300 and a["ids"]["generated"] == 300
    # the drawn splits follow the ratios and depend on (seed, id) alone
    n = {s: a["splits"][s]["recipes"] for s in ("train", "val", "test")}
    assert 210 <= n["train"] <= 270 and 15 <= n["val"] <= 50 and 15 <= n["test"] <= 50
    assert all(p == split_of(i, 0, (0.8, 0.1, 0.1)) for i, p in ids.values())
    import_recipes(part, images, tmp_path / "p", progress=False)
    sub = {r["title"]: (r["id"], r["partition"]) for r in _layer(tmp_path / "p", "layer1.json")}
    assert sub == {t: ids[t] for t in sub} and len(sub) == 100
    l2a = _layer(tmp_path / "a", "layer2.json")
    assert {r["id"]: r["images"] for r in l2a if r["id"] in {i for i, _ in sub.values()}} == \
        {r["id"]: r["images"] for r in _layer(tmp_path / "p", "layer2.json")}
    # another seed: same ids, other splits; ratios are honoured
    c = import_recipes(src, images, tmp_path / "c", seed=1, split_ratios=(0.5, 0.5, 0), progress=False)
    other = {r["title"]: (r["id"], r["partition"]) for r in _layer(tmp_path / "c", "layer1.json")}
    assert {t: v[0] for t, v in other.items()} == {t: v[0] for t, v in ids.items()}
    assert c["splits"]["test"]["recipes"] == 0 and 110 <= c["splits"]["val"]["recipes"] <= 190
    assert sum(other[t][1] != ids[t][1] for t in ids) > 50


def test_generated_id_collision_is_rehashed_duplicate_is_bad(tmp_path, images, monkeypatch):
    real = I._content_digest
    monkeypatch.setattr(I, "_content_digest", lambda rec: b"\x01" * 5 + real(rec)[5:])
    head = ["title", "ingredients", "instructions"]
    src = _write_csv(tmp_path / "c.csv", head, [["A", "x", "y"], ["B", "x", "y"], ["A", "x", "y"]])
    rep = import_recipes(src, images, tmp_path / "o", progress=False)
    assert rep["ids"] == {"given": 0, "generated": 2, "rehashed": 1}
    assert [(b["row"], b["reason"]) for b in rep["bad_rows"]] == [(3, I.R_DUP)]
    assert "same title, ingredients and instructions as row 1" in rep["bad_rows"][0]["detail"]
    assert [r["id"] for r in _layer(tmp_path / "o", "layer1.json")][0] == "0101010101"


def test_key_set_merges():
    ks = I._KeySet(flush=8)
    for k in range(100):
        ks.add(k * 7919 + (1 << 63), k, k + 1)
    assert len(ks) == 100 and len(ks.pending) == 4
    assert ks.get(42 * 7919 + (1 << 63)) == (42, 43) and ks.get(97 * 7919 + (1 << 63)) == (97, 98)
    assert ks.get(5) is None and ks.get((1 << 64) - 1) is None
    # an image id already taken is re-hashed, deterministically
    free = I._image_id("abc", "x.jpg", ks)
    ks.add(int(free, 16), 1)
    again = I._image_id("abc", "x.jpg", ks)
    assert again != free and len(again) == 10 and again == I._image_id("abc", "x.jpg", ks)


def test_strict_stops_at_first_bad_row(tmp_path, images, csv_file):
    out = tmp_path / "strict"
    with pytest.raises(ImportRowError, match=r"recipes\.csv: row 3 \(line 8\): missing title") as e:
        import_recipes(csv_file, images, out, strict=True, progress=False)
    assert (e.value.row, e.value.line, e.value.reason) == (3, 8, I.R_TITLE)
    assert out.is_dir() and not any(out.iterdir())  # nothing left behind, not even the images
    ok = _write_csv(tmp_path / "ok.csv", HEADER, csv_rows(images)[:2])
    rep = import_recipes(ok, images, out, strict=True, progress=False)
    assert rep["imported"] == 2 and rep["bad"] == 0


def test_path_escape_refused(tmp_path, images):
    (images / "link.jpg").symlink_to(images / "a.jpg")  # a symlink inside --images is followed
    paths = ["../secret.jpg", "sub/../../secret.jpg", str(tmp_path / "secret.jpg"), "/secret.jpg",
             "..", "sub/./c.jpg", "link.jpg", "C:\\x\\secret.jpg"]
    src = _write_csv(tmp_path / "e.csv", ["title", "ingredients", "instructions", "image"],
                     [[f"T{i}", "x", "y", p] for i, p in enumerate(paths)])
    rep = import_recipes(src, images, tmp_path / "o", progress=False)
    assert [(b["row"], b["reason"]) for b in rep["bad_rows"]] == \
        [(1, I.R_ESCAPE), (2, I.R_ESCAPE), (3, I.R_ESCAPE), (4, I.R_ESCAPE), (5, I.R_ESCAPE),
         (8, I.R_ESCAPE)]
    assert rep["imported"] == 2


def test_decompression_bomb_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    d = tmp_path / "im"
    d.mkdir()
    (d / "small.png").write_bytes(_png_bytes(1, (20, 20)))      # 400 px: fine
    (d / "warn.png").write_bytes(_png_bytes(2, (30, 30)))       # 900 px: over the limit
    (d / "bomb.png").write_bytes(_png_bytes(3, (40, 30)))       # 1200 px: over twice the limit
    src = _write_csv(tmp_path / "b.csv", ["title", "ingredients", "instructions", "image"],
                     [[n, "x", "y", f"{n}.png"] for n in ("small", "warn", "bomb")])
    rep = import_recipes(src, d, tmp_path / "o", progress=False)
    assert [(b["row"], b["reason"]) for b in rep["bad_rows"]] == [(2, I.R_DECODE), (3, I.R_DECODE)]
    assert "DecompressionBomb" in rep["bad_rows"][1]["detail"]


def test_refusals_before_writing(tmp_path, images, csv_file):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "README").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        import_recipes(csv_file, images, busy, progress=False)
    bad = _write_csv(tmp_path / "h.csv", ["name", "ingredients", "instructions"], [["a", "b", "c"]])
    with pytest.raises(ValueError, match="no column 'title'"):
        import_recipes(bad, images, tmp_path / "never", progress=False)
    assert not (tmp_path / "never").exists()
    with pytest.raises(ValueError, match="unknown input format"):
        import_recipes(tmp_path / "x.xlsx", images, tmp_path / "o", progress=False)
    with pytest.raises(ValueError, match="split_ratios"):
        import_recipes(csv_file, images, tmp_path / "o", split_ratios=(1, -1, 0), progress=False)


def test_link_mode(tmp_path, images, csv_file):
    rep = import_recipes(csv_file, images, tmp_path / "l", link=True, progress=False)
    assert rep["images"]["hardlinked"] == 5 and rep["images"]["copied"] == 0
    l2 = _layer(tmp_path / "l", "layer2.json")
    r2 = next(r for r in l2 if r["id"] == "r2")
    assert image_path(tmp_path / "l", "val", r2["images"][0]["id"]).samefile(images / "b.png")


def test_cli(tmp_path, images, csv_file, capsys):
    parser = argparse.ArgumentParser(prog="malm data")
    I.add_import_parser(parser.add_subparsers(dest="cmd"))
    usage = parser.parse_args(["import", "--from", "x", "--images", "y", "--out", "z"])
    assert usage.split_ratios == (0.8, 0.1, 0.1) and not usage.link and usage.seed == 0

    def run(*argv: str) -> int:
        args = parser.parse_args(["import", *argv])
        return args.func(args)

    base = ["--from", str(csv_file), "--images", str(images), "--quiet"]
    assert run(*base, "--out", str(tmp_path / "o"), "--seed", "3", "--split-ratios", "1,1,0") == 0
    out = capsys.readouterr().out
    assert "imported 4 of 16 rows" in out and "row 13 (line 37): malformed row" in out
    assert run(*base, "--out", str(tmp_path / "s"), "--strict") == 2
    assert "row 3 (line 8): missing title" in capsys.readouterr().err
    empty = _write_csv(tmp_path / "none.csv", ["title", "ingredients", "instructions"], [["", "", ""]])
    assert run("--from", str(empty), "--images", str(images), "--out", str(tmp_path / "n"),
               "--quiet") == 1
    with pytest.raises(SystemExit):
        parser.parse_args(["import", *base, "--out", "o", "--split-ratios", "1,2"])


def test_malm_data_import_through_the_cli(tmp_path, images, csv_file, capsys):
    from malm.cli import main

    out = tmp_path / "root"
    assert main(["data", "import", "--from", str(csv_file), "--images", str(images), "--out", str(out),
                 "--quiet"]) == 0
    assert "imported 4 of 16 rows" in capsys.readouterr().out
    assert (out / "layer1.json").exists() and (out / "import_report.json").exists()
    assert main(["data", "check", str(out)]) == 0


def test_prepare_and_train_on_imported_root(tmp_path, restore_torch_state):
    """48 recipes with images (32/8/8) -> import -> cache -> one epoch of the smoke model."""
    from malm import variants
    from malm.data.cache import load_manifest, prepare
    from malm.train.trainer import train

    from conftest import SMOKE

    d = tmp_path / "photos"
    d.mkdir()
    foods = ["tomato soup", "apple pie", "beef stew", "lemon cake", "fish tacos", "onion soup"]
    rows = []
    for i in range(48):
        (d / f"{i}.jpg").write_bytes(jpeg_bytes(100 + i, (48, 40)))
        food = foods[i % len(foods)]
        rows.append([f"{food.title()} {i}", f"2 cups {food.split()[0]}\n1 tsp salt\n{i % 3} eggs",
                     f"Heat the {food}.\nServe warm.", f"{i}.jpg",
                     "train" if i < 32 else ("val" if i < 40 else "test")])
    src = _write_csv(tmp_path / "mine.csv", ["title", "ingredients", "instructions", "image", "split"],
                     rows)
    root = tmp_path / "root"
    rep = import_recipes(src, d, root, progress=False)
    assert rep["imported"] == 48
    cfg = variants.resolve_from_files(
        "malm", [SMOKE],
        {"data": {"root": str(root), "cache_dir": str(tmp_path / "cache"), "synthetic": False,
                  "min_word_count": 1}},
        {"train": {"threads": 1, "epochs": 1, "batch_size": 16}})
    prepare(cfg.data, progress=False)
    man = load_manifest(tmp_path / "cache")
    assert {s: man["splits"][s]["pairs"] for s in ("train", "val", "test")} == \
        {"train": 32, "val": 8, "test": 8}
    assert man["vocab_size"] > 20
    # det ingredients read back too
    det_cache = prepare(data_config(root, tmp_path / "cache_det", ingredients="det"), progress=False)
    assert load_manifest(det_cache)["splits"]["train"]["pairs"] == 32
    metrics = train(cfg, tmp_path / "run", progress=False)
    assert 0.0 <= metrics["val/img2rec_R@1"] <= 100.0
    assert json.loads((tmp_path / "run" / "history.json").read_text())[0]["train/itc_loss"] > 0


@pytest.fixture
def restore_torch_state():
    """The trainer sets torch's thread count and deterministic flag for the process."""
    import torch

    before = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    yield
    torch.use_deterministic_algorithms(before[0])
    torch.set_num_threads(before[1])


def test_bom_crlf_and_blank_lines(tmp_path, images):
    body = ('\ufeffTitle,Ingredients,Instructions,Image\r\n'
            '"Rice Bowl","1 cup rice\r\n2 cups water","Boil.\r\nServe.",a.jpg\r\n'
            '\r\n'
            ',,,\r\n'
            'Toast,bread,Toast.,\r\n')
    src = tmp_path / "win.csv"
    src.write_bytes(body.encode("utf-8"))
    rep = import_recipes(src, images, tmp_path / "o", progress=False)
    assert rep["imported"] == 2 and rep["rows"] == 2 and rep["bad"] == 0
    l1 = _layer(tmp_path / "o", "layer1.json")
    assert [t["text"] for t in l1[0]["ingredients"]] == ["1 cup rice", "2 cups water"]
    assert [t["text"] for t in l1[0]["instructions"]] == ["Boil.", "Serve."]
