"""`malm index` / `malm search` (malm.search): photos preprocessed and embedded exactly as
evaluation, odd and broken files, ranking, re-ranking, recipe -> image search and the CLI layer."""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SMOKE, overrides
from malm import config as C
from malm.search import PhotoError, build_index, load_index, load_photo, search, search_images, top_k

CPU = torch.device("cpu")


def _main(argv: list[str]) -> int:
    """A tiny `malm` root with the two subcommands, as the lead will wire them into malm.cli."""
    from malm.search import add_index_parser, add_search_parser
    from malm.search.cli import main

    parser = argparse.ArgumentParser(prog="malm")
    sub = parser.add_subparsers(dest="command", required=True)
    add_index_parser(sub)
    add_search_parser(sub)
    parser.parse_args(argv)  # the registered parsers accept what the stand-alone entry accepts
    return main(argv)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data):
    """1-epoch smoke runs (malm: with a matching module; baseline: without) and malm's index of the
    test split with images."""
    from malm import variants
    from malm.train.trainer import train

    root = tmp_path_factory.mktemp("search")
    runs = {}
    for variant in ("malm", "baseline"):
        ov = C.parse_overrides(overrides(tiny_data, **{"train.threads": 1, "train.epochs": 1}))
        runs[variant] = root / variant
        train(variants.resolve_from_files(variant, [SMOKE], ov), runs[variant], progress=False)
    index = build_index(runs["malm"], root / "malm.npz", images=True, device="cpu")
    return root, runs, load_index(index)


@pytest.fixture(scope="module")
def test_split(trained):
    """The test pairs as evaluation sees them: eval embeddings, the dataset and each pair's first
    image file in the data root."""
    from malm.data.cache import split_array
    from malm.data.dataset import RecipeImageDataset
    from malm.data.recipe1m import image_path
    from malm.eval.embed import embed_split, eval_loader, load_trained

    root, runs, index = trained
    model, cfg, cache, _ = load_trained(runs["malm"], CPU, "best")
    loader = eval_loader(cfg.data, cfg.model.image, cache, "test", 128, CPU)
    image, recipe, ids = embed_split(model, loader, CPU, progress=False)
    ds = RecipeImageDataset(cache, "test", train=False, image_size=cfg.model.image.img_size)
    names, off = split_array(cache, "test", "image_names"), split_array(cache, "test", "image_offsets")
    paths = [str(image_path(cfg.data.root, "test", str(names[off[i]]))) for i in range(len(ds))]
    return {"image": image, "recipe": recipe, "ids": ids, "ds": ds, "paths": paths, "off": np.asarray(off),
            "model": model, "loader": loader, "cfg": cfg}


def _rank_bounds(sim_row: np.ndarray, true: int, tol: float = 1e-5) -> tuple[int, int]:
    """Possible 1-based ranks of column ``true`` when scores within ``tol`` may swap."""
    s = sim_row[true]
    return 1 + int((sim_row > s + tol).sum()), 1 + int((sim_row > s - tol).sum()) - 1


# ------------------------------------------------------------------ agreement with evaluation
def test_photo_search_equals_evaluation(trained, test_split):
    _, _, index = trained
    ev = test_split
    cfg = index.config
    assert np.array_equal(index.ids, ev["ids"])
    # the preprocessed photo is the evaluation tensor of its cached image, bit for bit
    for i, p in enumerate(ev["paths"]):
        assert torch.equal(load_photo(p, cfg), ev["ds"][i]["image"]), p
    # the index holds evaluation's recipe embeddings, and its image part evaluation's image ones
    np.testing.assert_allclose(index.recipe_emb, ev["recipe"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(index.image_emb[ev["off"][:-1]], ev["image"], rtol=0, atol=1e-6)
    assert np.allclose(np.linalg.norm(index.recipe_emb, axis=1), 1, atol=1e-5)
    res = search(index, ev["paths"], k=len(index), device="cpu")
    assert not res.failures and [r.query for r in res.results] == ev["paths"]
    np.testing.assert_allclose(res.embeddings, ev["image"], rtol=0, atol=1e-6)
    sim = ev["image"] @ ev["recipe"].T
    for i, r in enumerate(res.results):
        got = [h.id for h in r.hits].index(str(ev["ids"][i])) + 1
        lo, hi = _rank_bounds(sim[i], i)
        assert lo <= got <= hi, (i, got, lo, hi)
        assert [h.rank for h in r.hits] == list(range(1, len(index) + 1))
        assert all(a.score >= b.score for a, b in zip(r.hits, r.hits[1:]))


# ------------------------------------------------------------------ photos people have
def _base(w: int = 60, h: int = 45) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(0)
    img = np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)], -1)
    return np.clip(img + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)


_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}


def _exif(orientation: int) -> Image.Exif:
    ex = Image.Exif()
    ex[0x0112] = orientation
    return ex


def test_every_kind_of_photo_gets_a_result(trained, tmp_path):
    _, _, index = trained
    cfg = index.config
    a = _base()
    up = Image.fromarray(a)
    files = {}

    def save(name: str, im: Image.Image, **kw) -> Path:
        files[name] = tmp_path / name
        im.save(files[name], **kw)
        return files[name]

    save("rgb.jpg", up, quality=95)
    save("grey.png", up.convert("L"))
    save("la.png", up.convert("LA"))
    rgba = up.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, a.shape[1]).astype(np.uint8), (a.shape[0], 1))))
    save("rgba.png", rgba)
    save("palette.png", up.quantize(16))
    pt = up.quantize(16)
    pt.info["transparency"] = 0
    save("palette_transparent.png", pt, transparency=0)
    save("cmyk.jpg", up.convert("CMYK"), quality=95)
    save("grey16.png", Image.fromarray(a[..., 0].astype(np.uint16) * 257))
    save("int32.tif", Image.fromarray(a[..., 1].astype(np.int32) * 200))
    save("photo.webp", up, quality=90)
    save("tiny.png", Image.fromarray(a[:2, :3]))
    save("large.jpg", Image.fromarray(np.kron(a, np.ones((67, 67, 1), np.uint8))), quality=85)  # 4020x3015
    for o, t in _TRANSPOSE.items():
        save(f"exif{o}.png", up.transpose(t), exif=_exif(o))
    save("upright.png", up)
    save("rot.jpg", up.transpose(Image.Transpose.ROTATE_90), quality=95, exif=_exif(6))
    save("rot_no_exif.jpg", up.transpose(Image.Transpose.ROTATE_90), quality=95)
    save("clear.png", Image.new("RGBA", (40, 30), (0, 0, 0, 0)))
    save("white.png", Image.new("RGB", (40, 30), (255, 255, 255)))
    save("grey8.png", Image.fromarray(a[..., 0]))
    assert Image.open(files["grey16.png"]).mode == "I;16" and Image.open(files["int32.tif"]).mode == "I"
    assert Image.open(files["cmyk.jpg"]).mode == "CMYK" and Image.open(files["palette.png"]).mode == "P"

    names = list(files)
    res = search(index, [files[n] for n in names], k=3, device="cpu")
    assert not res.failures, res.failure_lines()
    assert [Path(r.query).name for r in res.results] == names
    assert all(len(r.hits) == 3 for r in res.results)
    emb = dict(zip(names, res.embeddings))
    # EXIF rotation is applied: every orientation gives the upright image's tensor and embedding
    upright = load_photo(files["upright.png"], cfg)
    for o in _TRANSPOSE:
        assert torch.equal(load_photo(files[f"exif{o}.png"], cfg), upright), o
        np.testing.assert_allclose(emb[f"exif{o}.png"], emb["upright.png"], rtol=0, atol=1e-6)
    # a rotated JPEG (lossy): close to the upright JPEG; the same pixels without the tag are not
    rot, rgb = load_photo(files["rot.jpg"], cfg), load_photo(files["rgb.jpg"], cfg)
    assert (rot - rgb).abs().mean() < 0.1 < 0.5 < (load_photo(files["rot_no_exif.jpg"], cfg) - rgb).abs().mean()
    # transparency is composited on white; 16-bit greyscale scales to the 8-bit values
    assert torch.equal(load_photo(files["clear.png"], cfg), load_photo(files["white.png"], cfg))
    assert torch.equal(load_photo(files["grey16.png"], cfg), load_photo(files["grey8.png"], cfg))
    for t in (load_photo(files[n], cfg) for n in ("tiny.png", "large.jpg")):
        s = cfg.model.image.img_size
        assert t.shape == (3, s, s) and torch.isfinite(t).all()


def _bomb(path: Path, side: int = 30000) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def test_pixel_bomb_is_refused(trained, tmp_path, monkeypatch):
    cfg = trained[2].config
    bomb = _bomb(tmp_path / "bomb.png")
    limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(PhotoError, match="decompression-bomb") as err:
        load_photo(bomb, cfg)
    assert str(err.value).startswith(f"{bomb}: refused") and "\n" not in str(err.value)
    assert Image.MAX_IMAGE_PIXELS == limit  # the limit is left on
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # someone switched Pillow's check off
    with pytest.raises(PhotoError, match="decompression-bomb"):
        load_photo(bomb, cfg)


def test_unreadable_files_fail_one_line_each_and_the_rest_gets_results(trained, tmp_path, capsys):
    root, _, index = trained
    a = _base()
    good = [tmp_path / "good1.jpg", tmp_path / "good2.png"]
    Image.fromarray(a).save(good[0])
    Image.fromarray(a).save(good[1])
    data = good[0].read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[:len(data) // 2])
    (tmp_path / "notes.txt").write_text("not a photo\n")
    (tmp_path / "empty.jpg").write_bytes(b"")
    bad = [tmp_path / n for n in ("truncated.jpg", "notes.txt", "empty.jpg")]
    order = [good[0], *bad, good[1]]

    res = search(index, order, k=2, device="cpu")
    assert [r.query for r in res.results] == [str(g) for g in good]
    assert res.n_failed == 3 and [f.path for f in res.failures] == [str(b) for b in bad]
    reasons = dict(zip((b.name for b in bad), (f.reason for f in res.failures)))
    assert "truncated" in reasons["truncated.jpg"]
    assert "not an image" in reasons["notes.txt"]
    assert "empty file" in reasons["empty.jpg"]

    capsys.readouterr()
    assert _main(["search", "--index", str(index.path), *map(str, order), "--json", "--k", "2"]) == 1
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert [r["query"] for r in doc["results"]] == [str(g) for g in good]
    assert all(len(r["hits"]) == 2 for r in doc["results"])
    assert [f["query"] for f in doc["failures"]] == [str(b) for b in bad]
    lines = err.strip().splitlines()
    assert len(lines) == 4 and lines[-1] == "malm search: 3 of 5 photo(s) could not be read"
    for line, b in zip(lines, bad):
        assert line.startswith(f"malm search: {b}: ")


# ------------------------------------------------------------------ ranking
def test_top_k_is_the_brute_force_order():
    rng = np.random.default_rng(0)
    g = rng.normal(size=(1000, 32)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    q = rng.normal(size=(9, 32)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    scores, rows = top_k(q, g, 10)
    sim = q @ g.T
    want = np.argsort(-sim, axis=1, kind="stable")[:, :10]
    assert np.array_equal(rows.numpy(), want)
    np.testing.assert_allclose(scores.numpy(), np.take_along_axis(sim, want, 1), rtol=0, atol=1e-6)
    assert top_k(q, g[:4], 10)[1].shape == (9, 4)  # k past the gallery: all of it
    with pytest.raises(ValueError):
        top_k(q, g[:, :8], 3)


def test_rerank_uses_the_matching_module_like_evaluation(trained, test_split):
    from malm.eval.embed import embed_split_tokens
    from malm.eval.rerank import PairScorer

    root, runs, index = trained
    ev = test_split
    photos = ev["paths"][:6]
    plain = search(index, photos, k=8, device="cpu")
    res = search(index, photos, k=8, rerank=5, device="cpu")
    _, _, _, tokens = embed_split_tokens(ev["model"], ev["loader"], CPU, progress=False)
    scorer = PairScorer(ev["model"].matching, tokens)
    for i, (p, r) in enumerate(zip(plain.results, res.results)):
        top5 = r.hits[:5]
        assert {h.id for h in top5} == {h.id for h in p.hits[:5]}  # the top 5 is only re-ordered
        assert [h.id for h in r.hits[5:]] == [h.id for h in p.hits[5:]]
        assert all(h.match_score is None for h in r.hits[5:])
        m = [h.match_score for h in top5]
        assert m == sorted(m, reverse=True)
        # the score of (photo i, candidate recipe) is evaluation's re-ranking score of that pair
        want = scorer(torch.full((5,), i), torch.tensor([h.row for h in top5]))
        np.testing.assert_allclose(m, want.numpy(), rtol=0, atol=1e-4)
    base = build_index(runs["baseline"], root / "baseline.npz", device="cpu")
    with pytest.raises(ValueError, match="no matching module"):
        search(base, photos[:1], rerank=3, device="cpu")
    assert len(search(base, photos[:1], k=2, device="cpu").results[0].hits) == 2


# ------------------------------------------------------------------ recipe -> image
def test_recipe_to_image_search(trained, test_split, tmp_path, capsys):
    from malm.data.recipe1m import LAYER1, read_layer1
    from malm.search import recipe_query

    root, runs, index = trained
    ev = test_split
    text = {r.id: r for r in read_layer1(Path(index.config.data.root) / LAYER1)}
    n = 12
    recipes = [text[str(i)] for i in index.ids[:n]]
    queries = [recipe_query(r.title, r.ingredients, r.instructions) for r in recipes]
    M = len(index.image_emb)
    res = search_images(index, queries, k=M, device="cpu")
    # tokenised with the run's vocabulary: the query is the indexed recipe, embedding for embedding
    np.testing.assert_allclose(res.embeddings, index.recipe_emb[:n], rtol=0, atol=1e-6)
    sim = index.recipe_emb[:n] @ index.image_emb.T
    for i, r in enumerate(res.results):
        assert r.query == recipes[i].title and len(r.hits) == M
        assert sorted(h.row for h in r.hits) == list(range(M))
        first = int(ev["off"][i])  # the pair's (first) image
        got = [h.row for h in r.hits].index(first) + 1
        lo, hi = _rank_bounds(sim[i], first)
        assert lo <= got <= hi
        assert all(Path(h.image).is_file() for h in r.hits[:3])
        assert r.hits[0].id == str(index.ids[index.image_recipe[r.hits[0].row]])
    # a Recipe1M-style JSON file and --title/--ingredient strings
    rec = recipes[0]
    f = tmp_path / "recipe.json"
    f.write_text(json.dumps({"title": rec.title, "ingredients": [{"text": t} for t in rec.ingredients],
                             "instructions": [{"text": t} for t in rec.instructions]}))
    res2 = search_images(index, f, k=4, rerank=3, device="cpu")
    np.testing.assert_allclose(res2.embeddings[0], index.recipe_emb[0], rtol=0, atol=1e-6)
    assert [h.match_score is not None for h in res2.results[0].hits] == [True, True, True, False]
    capsys.readouterr()
    argv = ["search", "--index", str(index.path), "--title", rec.title, "--k", "3", "--json"]
    for line in rec.ingredients:
        argv += ["--ingredient", line]
    assert _main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["direction"] == "recipe->image" and len(doc["results"][0]["hits"]) == 3
    assert _main(["search", "--index", str(index.path), "--recipe", str(f), "x.jpg"]) == 2
    no_images = build_index(runs["malm"], tmp_path / "noimg.npz", device="cpu")
    with pytest.raises(ValueError, match="--images"):
        search_images(no_images, queries[:1])


# ------------------------------------------------------------------ index files and the CLI
def test_index_file_cli_and_folders(trained, test_split, tmp_path, capsys):
    from malm.io import sha256_file

    root, runs, index = trained
    out = tmp_path / "idx" / "test.npz"
    assert _main(["index", "--run-dir", str(runs["malm"]), "--out", str(out), "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["test.json", "test.npz"]  # no temp files
    side = json.loads((out.parent / "test.json").read_text())
    assert side["index_sha256"] == sha256_file(out) and side["n_recipes"] == len(index)
    idx = load_index(out)
    assert idx.meta["checkpoint"]["file"] == "checkpoint_best.pt" and idx.meta["checkpoint"]["epoch"] == 1
    assert idx.meta["source"] == {"kind": "cache", "cache_dir": idx.meta["source"]["cache_dir"],
                                  "root": idx.meta["source"]["root"], "split": "test"}
    assert idx.tokenizer().get_vocab_size() == idx.meta["vocab_size"]
    assert C.from_dict(idx.meta["config"]) == index.config and not idx.has_images
    np.testing.assert_array_equal(idx.recipe_emb, index.recipe_emb)
    # a folder expands to its image files (recursively, sorted); CSV beside the table
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for j, p in enumerate(test_split["paths"][:3]):
        shutil.copy(p, folder / ("sub" if j else "") / f"p{j}.jpg")
    (folder / "readme.txt").write_text("skip me")
    capsys.readouterr()
    assert _main(["search", "--index", str(out), str(folder), "--k", "2", "--csv",
                  str(tmp_path / "hits.csv")]) == 0
    table = capsys.readouterr().out
    assert str(folder / "p0.jpg") in table and "readme" not in table
    rows = list(csv.DictReader((tmp_path / "hits.csv").open()))
    assert len(rows) == 6 and list(rows[0]) == ["query", "rank", "id", "title", "score",
                                                 "match_score", "image"]
    # every option documents itself
    from malm.search.cli import make_parser

    sub = next(a for a in make_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("index", "search"):
        for action in sub.choices[name]._actions:
            assert action.help, (name, action.dest)
    assert _main(["search", "--index", str(tmp_path / "missing.npz"), "a.jpg"]) == 2


def test_index_of_a_root_and_a_changed_checkpoint(trained, tmp_path):
    from malm.data.recipe1m import LAYER1, read_layer1

    root, runs, index = trained
    data_root = index.config.data.root
    idx = load_index(build_index(runs["malm"], tmp_path / "root.npz", "test", root=data_root, device="cpu"))
    test_ids = sorted(r.id for r in read_layer1(Path(data_root) / LAYER1) if r.partition == "test")
    assert list(idx.ids) == test_ids and idx.meta["source"]["kind"] == "root"
    rows = np.searchsorted(idx.ids, index.ids)
    assert np.array_equal(idx.ids[rows], index.ids)  # the cached pairs are among the root's recipes
    for a, b in zip(idx.tokens(), index.tokens()):  # tokenised as the cache tokenised them
        assert np.array_equal(a[rows], b)
    np.testing.assert_allclose(idx.recipe_emb[rows], index.recipe_emb, rtol=0, atol=1e-6)
    # the index refuses to search with other weights than it was built from
    run = tmp_path / "run"
    shutil.copytree(runs["malm"], run)
    moved = load_index(build_index(run, tmp_path / "moved.npz", device="cpu"))
    photo = tmp_path / "p.png"
    Image.fromarray(_base()).save(photo)
    shutil.copy(run / "checkpoint.pt", run / "checkpoint_best.pt")
    with pytest.raises(ValueError, match="rebuild the index"):
        search(moved, [photo], device="cpu")
    (run / "checkpoint_best.pt").unlink()
    with pytest.raises(FileNotFoundError, match="no longer exists"):
        search(load_index(moved.path), [photo], device="cpu")
