"""Cache (prepare), tokenizer/vocabulary, classes, dataset items and masking."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, trainers
from PIL import Image

import malm.data.cache as cache_mod
from malm.data.cache import is_cached, load_manifest, prepare
from malm.data.store import load_resized
from malm.data.dataset import RecipeImageDataset, collate
from malm.data.masking import MaskingCollate, mask_tokens, random_patch_mask
from malm.data.recipe1m import Recipe1MError
from malm.data.text import (MASK_ID, PAD_ID, UNK_ID, build_tokenizer, class_of_title,
                            classes_from_file, derive_classes, encode_lines, new_tokenizer,
                            title_words)
from recipe1m_fixtures import (STANDARD_MISSING, data_config, image_file, recipe,
                               standard_recipes, write_tree)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "r1m", standard_recipes(), missing=STANDARD_MISSING)


@pytest.fixture
def built(tree: Path, tmp_path: Path) -> Path:
    return prepare(data_config(tree, tmp_path / "cache"), progress=False)


# ------------------------------------------------------------------------------------ prepare
def test_prepare_layout_and_counts(built: Path) -> None:
    man = load_manifest(built)
    assert {s: man["splits"][s]["pairs"] for s in ("train", "val", "test")} == \
        {"train": 4, "val": 3, "test": 3}
    tr = man["splits"]["train"]
    assert (tr["images"], tr["images_missing"], tr["text_only"], tr["images_corrupt"]) == (5, 1, 2, 0)
    d = built / "train"
    assert np.load(d / "title.npy").shape == (4, 15)
    assert np.load(d / "ingrs.npy").shape == (4, 20, 15)
    assert np.load(d / "instrs.npy").shape == (4, 20, 15)
    assert np.load(d / "ingrs.npy").dtype == np.uint16
    assert np.load(d / "image_offsets.npy").tolist() == [0, 1, 3, 4, 5]
    imgs = np.load(d / "images.npy", mmap_mode="r")
    assert imgs.shape == (5, 24, 24, 3) and imgs.dtype == np.uint8
    assert list(np.load(d / "ids.npy")) == [f"{i:010x}" for i in (1, 2, 3, 4)]
    assert np.array_equal(imgs[0], load_resized(str(image_file(built.parent / "r1m", "train",
                                                                   "0000010000.jpg")), 24))
    tok = Tokenizer.from_file(str(built / "tokenizer.json"))
    assert tok.token_to_id("[PAD]") == PAD_ID and tok.token_to_id("[MASK]") == MASK_ID
    assert json.loads((built / "classes.json").read_text())[0] == "background"
    assert not list(built.parent.glob(".cache.tmp-*"))


def test_prepare_is_cached_and_rebuilds_on_change(tree: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = data_config(tree, tmp_path / "cache")
    prepare(cfg, progress=False)
    stamp = (tmp_path / "cache" / "manifest.json").stat().st_mtime_ns
    calls = []
    real = cache_mod._build
    monkeypatch.setattr(cache_mod, "_build", lambda *a: (calls.append(1), real(*a)))
    assert prepare(cfg, progress=False) == tmp_path / "cache" and calls == []
    assert (tmp_path / "cache" / "manifest.json").stat().st_mtime_ns == stamp
    cfg2 = data_config(tree, tmp_path / "cache", min_word_count=3)
    assert not is_cached(cfg2)
    prepare(cfg2, progress=False)
    assert calls == [1] and load_manifest(tmp_path / "cache")["key"]["config"]["min_word_count"] == 3
    # an input file changing (size/mtime) also rebuilds
    l1 = tree / "layer1.json"
    l1.write_text(l1.read_text() + "\n")
    assert not is_cached(cfg2)


def test_failed_prepare_leaves_previous_cache(tree: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = data_config(tree, tmp_path / "cache")
    prepare(cfg, progress=False)

    def boom(*a, **k):
        raise KeyboardInterrupt("killed")
    monkeypatch.setattr(cache_mod.T, "build_tokenizer", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare(data_config(tree, tmp_path / "cache", max_tokens=5), progress=False)
    assert is_cached(cfg)
    assert not list(tmp_path.glob(".cache.tmp-*"))


def test_prepare_never_replaces_a_foreign_folder(tree: Path, tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a malm data cache"):
        prepare(data_config(tree, tmp_path / "mine"), progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_corrupt_image_skipped_and_counted(tmp_path: Path) -> None:
    recs = [recipe(1, "train", 2), recipe(2, "train", 1), recipe(3, "val", 1), recipe(4, "test", 1)]
    root = write_tree(tmp_path / "r", recs, corrupt={"0000010000.jpg", "0000020000.jpg"})
    (root / "val").joinpath(*"0000030000.jpg"[:4], "0000030000.jpg").write_bytes(b"not an image")
    out = prepare(data_config(root, tmp_path / "c"), progress=False)
    man = load_manifest(out)
    assert man["splits"]["train"]["images_corrupt"] == 2
    assert man["splits"]["train"]["pairs"] == 1          # recipe 2 lost its only image
    assert man["splits"]["train"]["pairs_dropped_corrupt"] == 1
    assert man["splits"]["val"]["pairs"] == 0 and man["splits"]["val"]["images_corrupt"] == 1
    assert len(man["corrupt_images"]) == 3
    ds = RecipeImageDataset(out, "train", train=True, image_size=16)
    assert len(ds) == 1 and list(np.load(out / "train" / "image_names.npy")) == ["0000010001.jpg"]


def test_max_pairs_first_by_id(tree: Path, tmp_path: Path) -> None:
    out = prepare(data_config(tree, tmp_path / "c", max_pairs={"train": 2, "test": 1}),
                  progress=False)
    assert list(np.load(out / "train" / "ids.npy")) == [f"{1:010x}", f"{2:010x}"]
    assert len(np.load(out / "test" / "ids.npy")) == 1
    assert load_manifest(out)["splits"]["train"]["pairs_over_max_pairs"] == 2
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        prepare(data_config(tree, tmp_path / "c2", max_pairs={"dev": 1}), progress=False)


def test_no_training_pairs_is_an_error(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "r", [recipe(1, "train", 0), recipe(2, "test", 1)])
    with pytest.raises(Recipe1MError, match="no paired training recipe"):
        prepare(data_config(root, tmp_path / "c"), progress=False)


# ----------------------------------------------------------------------------- text / vocab
def test_vocab_min_count_honoured() -> None:
    texts = ["Salt, salt SALT pepper", "pepper onion", "garlic"]
    tok = build_tokenizer(texts, min_count=2)
    vocab = tok.get_vocab()
    assert {"salt", "pepper"} <= set(vocab) and not {"onion", "garlic"} & set(vocab)
    assert vocab["salt"] < vocab["pepper"]                      # by decreasing count
    assert len(vocab) == 4 + 2
    assert tok.encode("garlic salt", add_special_tokens=False).ids == [UNK_ID, vocab["salt"]]


def test_vocab_from_paired_train_only(tmp_path: Path) -> None:
    recs = [recipe(1, "train", 1, title="Zucchini Bread"), recipe(2, "train", 1, title="Zucchini Bread"),
            recipe(3, "train", 0, title="Mango Mango Mango"), recipe(4, "val", 1, title="Kiwi Kiwi")]
    root = write_tree(tmp_path / "r", recs)
    out = prepare(data_config(root, tmp_path / "c", min_word_count=2), progress=False)
    vocab = Tokenizer.from_file(str(out / "tokenizer.json")).get_vocab()
    assert "zucchini" in vocab and "mango" not in vocab and "kiwi" not in vocab


def test_bulk_encoding_matches_plain_tokenizer() -> None:
    """The ASCII fast path (normalise in Python, tokenizer without normaliser) changes nothing."""
    words = ["Café", "ÉCLAIR", "ﬁsh", "Ｔｏｍａｔｏ", "½", "ΣΟΦΊΑΣ", "salt", "Pepper,", "1/2", "don't"]
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, rng.integers(1, 25))) for _ in range(300)]
    tok = build_tokenizer(texts, min_count=2)
    ref = new_tokenizer()
    ref.train_from_iterator(texts, trainer=trainers.WordLevelTrainer(
        vocab_size=10**6, min_frequency=2, special_tokens=["[PAD]", "[UNK]", "[MASK]", "[CLS]"],
        show_progress=False))
    assert tok.get_vocab() == ref.get_vocab() and "fish" in tok.get_vocab()
    ref.enable_truncation(15)
    ref.enable_padding(length=15, pad_id=PAD_ID)
    expect = [e.ids for e in ref.encode_batch(texts, add_special_tokens=False)]
    assert encode_lines(tok, texts, 15).tolist() == expect


def test_caps_honoured(tmp_path: Path) -> None:
    long_line = " ".join(f"w{k}" for k in range(30))
    recs = [recipe(1, "train", 1, title=long_line,
                   ingredients=[f"ingredient {k}" for k in range(21)],
                   instructions=[long_line] * 3)]
    root = write_tree(tmp_path / "r", recs)
    out = prepare(data_config(root, tmp_path / "c"), progress=False)
    ingrs = np.load(out / "train" / "ingrs.npy")
    instrs = np.load(out / "train" / "instrs.npy")
    title = np.load(out / "train" / "title.npy")
    assert ingrs.shape == (1, 20, 15) and (ingrs[0, :, 0] != PAD_ID).all()   # 21 lines -> 20
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert ingrs[0, 19, :2].tolist() == [tok.token_to_id("ingredient"), tok.token_to_id("19")]
    assert (title[0] != PAD_ID).all() and title[0, -1] == tok.token_to_id("w14")  # 30 -> 15
    assert (instrs[0, :3] != PAD_ID).all() and (instrs[0, 3:] == PAD_ID).all()


def test_class_rule() -> None:
    tok = new_tokenizer()
    titles = ["Spicy Tomato Soup", "Chicken Soup", "Tomato Soup with Basil", "Basil Pesto",
              "Easy Chicken", "Basil Chicken", "Mystery"]
    names = derive_classes(tok, titles, num_classes=10, min_titles=2)
    assert names[0] == "background"
    assert names[1:] == ["basil", "chicken", "soup", "tomato"]     # by count, then by word
    ids = {n: i for i, n in enumerate(names)}
    cls = lambda t: names[class_of_title(title_words(tok, t), ids)]
    assert cls("Spicy Tomato Soup") == "soup"                 # last class word
    assert cls("Tomato Soup with Basil") == "soup"            # head = words before 'with'
    assert cls("Bread with Chicken") == "chicken"             # head has none: whole title
    assert cls("Mystery Dish") == "background"
    assert title_words(tok, "Mom's Apple-Pie") == ["mom", "'", "s", "apple", "-", "pie"]
    assert derive_classes(tok, titles, num_classes=2, min_titles=2) == ["background", "basil", "chicken"]


def test_class_file(tree: Path, tmp_path: Path) -> None:
    f = tmp_path / "classes.csv"
    f.write_text("id,class\n" + "\n".join(f"{i:010x},{'soup' if i % 2 else 'cake'}"
                                          for i in range(1, 10)) + "\n")
    names, mapping = classes_from_file(f, [f"{i:010x}" for i in (1, 2, 3)])
    assert names == ["background", "soup", "cake"] and mapping[f"{2:010x}"] == 2
    out = prepare(data_config(tree, tmp_path / "c", class_file=str(f)), progress=False)
    # train pairs 1-4: soup 2, cake 2 -> tie broken by name: cake = 1, soup = 2
    assert np.load(out / "train" / "cls.npy").tolist() == [2, 1, 2, 1]
    assert np.load(out / "test" / "cls.npy").tolist() == [0, 0, 0]       # not in the file
    j = tmp_path / "classes.json"
    j.write_text(json.dumps({f"{1:010x}": "pie"}))
    assert classes_from_file(j, [f"{1:010x}"])[0] == ["background", "pie"]


def test_classes1m_pickle_is_read_as_plain_data_only(tmp_path: Path) -> None:
    """im2recipe's classes1M.pkl (two pickles, protocol 2 as Python 2 wrote it) loads; a pickle
    that references a callable (how a pickle runs code) is refused, naming the file."""
    from malm.data.text import read_class_file

    good = tmp_path / "classes1M.pkl"
    with open(good, "wb") as fh:
        pickle.dump({f"{1:010x}": 1, f"{2:010x}": 0}, fh, protocol=2)
        pickle.dump(["background", "pie"], fh, protocol=2)
    mapping, names = read_class_file(good)
    assert mapping == {f"{1:010x}": 1, f"{2:010x}": 0} and names == ["background", "pie"]

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    bad = tmp_path / "evil.pkl"
    with open(bad, "wb") as fh:
        pickle.dump({"a": Evil()}, fh)
        pickle.dump([], fh)
    with pytest.raises(ValueError, match="evil.pkl.*refusing to load"):
        read_class_file(bad)
    assert not (tmp_path / "pwned").exists()


# ------------------------------------------------------------------------------------ dataset
def test_dataset_items(built: Path) -> None:
    ds = RecipeImageDataset(built, "train", train=True, image_size=16, seed=0)
    item = ds[1]
    assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32
    assert item["title"].shape == (15,) and item["title"].dtype == torch.long
    assert item["ingrs"].shape == (20, 15) and item["instrs"].shape == (20, 15)
    assert item["ingrs"].dtype == torch.long and item["cls"].dtype == torch.long
    assert item["id"] == f"{2:010x}" and item["index"] == 1
    assert -3 < item["image"].min() and item["image"].max() < 3
    # seeded: same (seed, epoch, index) -> same crop; epochs differ
    assert torch.equal(ds[1]["image"], RecipeImageDataset(built, "train", True, 16, seed=0)[1]["image"])
    ds.set_epoch(1)
    crops = {ds[1]["image"].sum().item() for _ in range(2)}
    assert len(crops) == 1
    seen = set()
    for e in range(8):
        ds.set_epoch(e)
        seen.add(round(ds[1]["image"].sum().item(), 3))
    assert len(seen) > 1
    # pickles without the memmaps, and still works after
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._arrays is None and torch.equal(clone[0]["title"], ds[0]["title"])


def test_eval_is_center_crop_of_first_image(built: Path) -> None:
    ev = RecipeImageDataset(built, "train", train=False, image_size=16)
    a, b = ev[1]["image"], ev[1]["image"]
    assert torch.equal(a, b)
    raw = np.load(built / "train" / "images.npy", mmap_mode="r")[1, 4:20, 4:20]
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
    expect = (torch.from_numpy(np.array(raw)).permute(2, 0, 1).float() / 255 - mean) / std
    assert torch.allclose(a, expect, atol=1e-6)
    with pytest.raises(ValueError, match="exceeds"):
        RecipeImageDataset(built, "train", train=False, image_size=32)


def test_unreadable_image_is_skipped_not_blacked_out(built: Path) -> None:
    ds = RecipeImageDataset(built, "train", train=False, image_size=16)

    class Broken:
        shape = ds._open()["images"].shape

        def __getitem__(self, key):
            raise OSError("I/O error")
    ds._arrays["images"] = Broken()
    assert ds[0] is None and ds.skipped == 1
    ok = RecipeImageDataset(built, "train", train=False, image_size=16)[1]
    batch = collate([ds[0], ok])
    assert batch["n_skipped"] == 1 and batch["image"].shape[0] == 1 and batch["id"] == [ok["id"]]


def test_dataloader_batches(built: Path) -> None:
    ds = RecipeImageDataset(built, "val", train=True, image_size=16, seed=3)
    coll = MaskingCollate(num_patches=4, ratio=0.5, seed=1)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=coll, shuffle=False)
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 3, 16, 16) and batch["ingrs"].shape == (2, 20, 15)
    assert batch["mask"].shape == (2, 4) and batch["mask"].sum(1).tolist() == [2, 2]
    assert batch["index"].tolist() == [0, 1] and batch["n_skipped"] == 0
    assert collate([None, None]) is None


# ------------------------------------------------------------------------------------ masking
@pytest.mark.parametrize("ratio,P", [(0.75, 196), (0.9, 196), (0.5, 64), (0.25, 64), (0.0, 16)])
def test_patch_mask_ratio_exact(ratio: float, P: int) -> None:
    g = torch.Generator().manual_seed(0)
    m = random_patch_mask(8, P, ratio, g)
    assert m.shape == (8, P) and m.dtype == torch.bool
    assert (m.sum(1) == round(ratio * P)).all()
    assert not torch.equal(m[0], m[1]) or ratio == 0.0


def test_patch_mask_deterministic_and_collate_reproducible() -> None:
    a = random_patch_mask(4, 49, 0.75, torch.Generator().manual_seed(5))
    b = random_patch_mask(4, 49, 0.75, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    with pytest.raises(ValueError):
        random_patch_mask(1, 4, 1.0)
    samples = [{"image": torch.zeros(3, 2, 2), "title": torch.ones(15, dtype=torch.long),
                "ingrs": torch.ones(20, 15, dtype=torch.long),
                "instrs": torch.ones(20, 15, dtype=torch.long), "cls": torch.tensor(0),
                "id": str(i), "index": i} for i in range(4)]
    c1, c2 = MaskingCollate(49, 0.75, seed=7), pickle.loads(pickle.dumps(MaskingCollate(49, 0.75, seed=7)))
    assert torch.equal(c1(samples)["mask"], c2(samples)["mask"])
    c2.set_epoch(1)
    assert not torch.equal(c1(samples)["mask"], c2(samples)["mask"])
    zero = MaskingCollate(49, 0.0)(samples)
    assert zero["mask"].shape == (4, 49) and not zero["mask"].any() and "title_mask" not in zero


def test_recipe_masking_only_non_pad() -> None:
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(4, 100, (6, 20, 15), generator=g)
    lengths = torch.randint(0, 16, (6, 20), generator=g)
    tokens[torch.arange(15).expand(6, 20, 15) >= lengths[..., None]] = PAD_ID
    masked, mask = mask_tokens(tokens, 0.75, MASK_ID, torch.Generator().manual_seed(1))
    pad = tokens == PAD_ID
    assert not (mask & pad).any()
    assert torch.equal(masked[pad], tokens[pad])
    assert (masked[mask] == MASK_ID).all() and torch.equal(masked[~mask], tokens[~mask])
    assert torch.equal(mask.sum(-1), torch.round(lengths * 0.75).long())
    again, _ = mask_tokens(tokens, 0.75, MASK_ID, torch.Generator().manual_seed(1))
    assert torch.equal(again, masked)
    samples = [{"image": torch.zeros(3, 2, 2), "title": tokens[i, 0], "ingrs": tokens[i],
                "instrs": tokens[i], "cls": torch.tensor(0), "id": str(i), "index": i}
               for i in range(6)]
    batch = MaskingCollate(4, 0.5, recipe_ratio=0.75)(samples)
    assert batch["ingrs_mask"].shape == (6, 20, 15) and not (batch["ingrs_mask"] & pad).any()
    assert (batch["ingrs"][batch["ingrs_mask"]] == MASK_ID).all()


def test_readers_of_a_trained_run_never_rebuild_the_cache(tiny_data, tmp_path):
    """embed/grounding load a run through require_cache: a missing or stale cache is a clear error
    naming what differs and what to run, and nothing is built."""
    from conftest import SMOKE
    from malm import config as C
    from malm.data.cache import require_cache

    data = C.merge(C.merge(C.Config(), C.load_yaml(SMOKE)).data,
                   {"root": tiny_data["data.root"], "cache_dir": tiny_data["data.cache_dir"], "synthetic": False})
    assert require_cache(data) == Path(tiny_data["data.cache_dir"]).absolute()
    stale = C.merge(data, {"max_tokens": data.max_tokens + 1})
    with pytest.raises(FileNotFoundError, match=r"(?s)data\.max_tokens.*never rebuilds.*malm data prepare"):
        require_cache(stale, who="embed")
    missing = C.merge(data, {"cache_dir": str(tmp_path / "nothing")})
    with pytest.raises(FileNotFoundError, match="is missing"):
        require_cache(missing)
    assert not (tmp_path / "nothing").exists()


def test_max_images_per_recipe_and_image_sampling(tmp_path):
    """data.max_images_per_recipe caps the cached images of a recipe (its first ones); with
    image_sampling=random a training sample shows one image drawn per recipe and epoch (H-T),
    with first always the first one."""
    recipes = [recipe(1, "train", 3), recipe(2, "train", 1), recipe(3, "val"), recipe(4, "test")]
    root = write_tree(tmp_path / "r1m", recipes)
    full = prepare(data_config(root, tmp_path / "all"), progress=False)
    capped = prepare(data_config(root, tmp_path / "cap", max_images_per_recipe=2), progress=False)
    assert list(np.load(full / "train" / "image_offsets.npy")) == [0, 3, 4]
    assert list(np.load(capped / "train" / "image_offsets.npy")) == [0, 2, 3]
    names = [str(x) for x in np.load(capped / "train" / "image_names.npy")]
    assert names == recipes[0]["_images"][:2] + recipes[1]["_images"]
    assert load_manifest(capped)["key"]["config"]["max_images_per_recipe"] == 2
    assert "max_images_per_recipe" not in load_manifest(full)["key"]["config"]

    def rows(sampling: str) -> set[bytes]:
        ds = RecipeImageDataset(full, "train", train=True, image_size=24, seed=0, image_sampling=sampling)
        seen = set()
        for epoch in range(12):
            ds.set_epoch(epoch)
            seen.add(ds[0]["image"].numpy().tobytes())
        return seen

    # one image, flipped or not, gives at most 2 distinct samples: more means several images
    assert len(rows("random")) > 2
    assert len(rows("first")) <= 2
    with pytest.raises(ValueError, match="image_sampling"):
        RecipeImageDataset(full, "train", train=True, image_size=24, image_sampling="all")


def test_jpeg_store_matches_the_raw_store(tmp_path):
    """data.image_store=jpeg keeps the same images, re-encoded, in one file per split with an
    offset index; samples decode to the raw store's pixels within JPEG error, and it is smaller."""
    root = write_tree(tmp_path / "r1m", standard_recipes(), missing=STANDARD_MISSING)
    raw = prepare(data_config(root, tmp_path / "raw", cache_image_size=32), progress=False)
    jpg = prepare(data_config(root, tmp_path / "jpg", cache_image_size=32, image_store="jpeg",
                              jpeg_quality=95), progress=False)
    man = load_manifest(jpg)
    assert man["image_store"] == "jpeg" and man["jpeg_quality"] == 95
    assert not (jpg / "train" / "images.npy").exists() and (jpg / "train" / "images.jpg").exists()
    assert man["image_bytes"]["train"] < load_manifest(raw)["image_bytes"]["train"]
    assert is_cached(data_config(root, tmp_path / "jpg", cache_image_size=32, image_store="jpeg",
                                 jpeg_quality=95))
    assert not is_cached(data_config(root, tmp_path / "jpg", cache_image_size=32))  # other store
    for split in ("train", "test"):
        a = RecipeImageDataset(raw, split, train=False, image_size=32)
        b = RecipeImageDataset(jpg, split, train=False, image_size=32)
        assert len(a) == len(b) and a.ids == b.ids
        for i in range(len(a)):
            x, y = a[i]["image"], b[i]["image"]
            assert x.shape == y.shape and (x - y).abs().mean() < 0.1  # normalised units
    # random crops and flips work on decoded rows too, and a worker gets a picklable dataset
    ds = RecipeImageDataset(jpg, "train", train=True, image_size=24, seed=0)
    assert ds[0]["image"].shape == (3, 24, 24)
    assert pickle.loads(pickle.dumps(ds))[1]["image"].shape == (3, 24, 24)


def test_cache_images_cap_with_worker_pool_finishes_and_matches_inline(tmp_path: Path) -> None:
    """A capped split decoded by the worker pool stops at the cap, shuts the pool down and writes
    what the inline path writes. (The imap-based version once hung in pool.join at the cap; that
    race did not reproduce here, so this guards the chunked path's result, not the race itself.)"""
    import threading
    from types import SimpleNamespace

    from PIL import Image

    from malm.data import store

    rng = np.random.default_rng(0)
    pairs = []
    for i in range(1500):
        p = tmp_path / "img" / f"{i:04d}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(p)
        pairs.append(SimpleNamespace(id=f"{i:010x}", found=[str(p)]))
    cap = 2 * store._PAIRS_PER_CHUNK + 37  # inside the third chunk; 1000+ results left unread
    out = {}

    def build(name: str, workers: int) -> None:
        (tmp_path / name).mkdir()
        out[name] = store.cache_images(pairs, tmp_path / name, 64, cap, workers, False, "train")

    t = threading.Thread(target=build, args=("pool", 2), daemon=True)
    t.start()
    t.join(timeout=120)
    assert not t.is_alive(), "cache_images with a worker pool did not finish at the cap"
    build("inline", 1)
    for name in ("pool", "inline"):
        assert len(out[name].pairs) == cap and out[name].over_cap == len(pairs) - cap
    assert out["pool"].names == out["inline"].names
    np.testing.assert_array_equal(np.load(tmp_path / "pool" / "images.npy"),
                                  np.load(tmp_path / "inline" / "images.npy"))


@pytest.mark.parametrize("orientation,stored_as", [(3, Image.Transpose.ROTATE_180),
                                                   (6, Image.Transpose.ROTATE_90),
                                                   (8, Image.Transpose.ROTATE_270)])
def test_the_cache_reads_an_exif_rotated_photo_upright(tmp_path, orientation, stored_as):
    """A phone photo stored sideways with an EXIF orientation tag is cached as people see it (as
    `malm search` reads it), not sideways; without the tag the same pixels stay as they are."""
    rng = np.random.default_rng(orientation)
    up = Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8))  # wide: rotation shows
    exif = Image.Exif()
    exif[0x0112] = orientation
    up.save(tmp_path / "up.png")
    up.transpose(stored_as).save(tmp_path / "tagged.png", exif=exif)
    up.transpose(stored_as).save(tmp_path / "untagged.png")
    want = load_resized(str(tmp_path / "up.png"), 24)
    assert np.array_equal(load_resized(str(tmp_path / "tagged.png"), 24), want)
    assert not np.array_equal(load_resized(str(tmp_path / "untagged.png"), 24), want)
