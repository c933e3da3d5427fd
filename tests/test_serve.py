"""`malm serve` (malm.search.serve) without a browser: the app in-process (Starlette TestClient) and
under a real uvicorn server, against tiny trained indexes (tests/search_fixtures.py)."""

from __future__ import annotations

import argparse
import io
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="malm serve needs fastapi (requirements.txt)")
pytest.importorskip("uvicorn", reason="malm serve needs uvicorn (requirements.txt)")
pytest.importorskip("python_multipart", reason="malm serve needs python-multipart (requirements.txt)")

from fastapi.testclient import TestClient  # noqa: E402

from search_fixtures import bomb, broken, photo, tiny_indexes  # noqa: E402

from malm.search import load_index, search  # noqa: E402
from malm.search.serve import DEFAULT_HOST, create_app  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
K = 4
LOCAL = "http://127.0.0.1"


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_data):
    return tiny_indexes(tmp_path_factory, tiny_data)


@pytest.fixture(scope="module")
def index(built):
    return load_index(built["malm"])


@pytest.fixture(scope="module")
def client(index):
    app = create_app(index, k=K, device="cpu")
    with TestClient(app, base_url=LOCAL) as c:
        yield c
    app.state.pool.shutdown()


def _upload(client, path: Path, field: str = "photo", name: str | None = None):
    with open(path, "rb") as f:
        return client.post("/api/search", files={field: (name or path.name, f, "application/octet-stream")})


def _readable(resp, status: int) -> str:
    """The answer is ``status`` with a one-line JSON error, no traceback, no server path."""
    assert resp.status_code == status, resp.text
    msg = resp.json()["error"]
    assert msg and "\n" not in msg and "Traceback" not in msg
    assert tempfile.gettempdir() not in msg and "malm-serve-" not in msg  # no temp path leaks
    return msg


# ------------------------------------------------------------------ results
def test_page_and_info(client, index):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="photo-input"' in page.text and "/app.js" in page.text
    for asset, kind in (("/app.js", "javascript"), ("/app.css", "css")):
        r = client.get(asset)
        assert r.status_code == 200 and kind in r.headers["content-type"]
    js = client.get("/app.js").text
    assert not re.search(r"\.(innerHTML|outerHTML)\s*=|insertAdjacentHTML|document\.write", js)  # text only
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    info = client.get("/api/info").json()
    assert info["recipes"] == len(index) and info["k"] == K and info["attention"] is True
    assert info["max_upload_bytes"] == 10 * 2**20 and info["variant"] == "malm"
    assert client.get("/docs").status_code == 404 and client.get("/openapi.json").status_code == 404


def test_upload_gives_the_k_results_of_search(client, index, built, tmp_path):
    photos = [Path(p) for p in built["photos"][:3]] + [photo(tmp_path / "mine.png", 70, 50, seed=3)]
    for p in photos:
        resp = _upload(client, p)
        assert resp.status_code == 200, resp.text
        got = resp.json()
        want = search(index, [p], k=K, device="cpu").results[0].hits
        assert len(got["hits"]) == K
        assert [h["title"] for h in got["hits"]] == [h.title for h in want]
        assert [h["id"] for h in got["hits"]] == [h.id for h in want]
        assert [h["rank"] for h in got["hits"]] == list(range(1, K + 1))
        np.testing.assert_allclose([h["score"] for h in got["hits"]], [h.score for h in want], atol=1e-6)
        for h, w in zip(got["hits"], want):
            assert [e["text"] for e in h["ingredients"]] == w.ingredients
            assert [e["line"] for e in h["ingredients"]] == list(range(len(w.ingredients)))
        assert got["photo"] and got["bytes"] == p.stat().st_size
    # the raw bytes as the body work as well as a form upload; the form's file name is ignored
    p = photos[0]
    raw = client.post("/api/search", content=p.read_bytes(), headers={"content-type": "image/jpeg"})
    form = _upload(client, p, field="upload", name="../../etc/passwd")
    assert [h["id"] for h in raw.json()["hits"]] == [h["id"] for h in form.json()["hits"]] == \
        [h.id for h in search(index, [p], k=K, device="cpu").results[0].hits]


def test_rerank_gives_the_reranked_results_of_search(index, built):
    p = Path(built["photos"][4])
    app = create_app(index, k=K, rerank=3, device="cpu", warmup=False)
    with TestClient(app, base_url=LOCAL) as c:
        got = _upload(c, p).json()["hits"]
    want = search(index, [p], k=K, rerank=3, device="cpu").results[0].hits
    assert [h["id"] for h in got] == [h.id for h in want]
    np.testing.assert_allclose([h["match_score"] for h in got[:3]], [h.match_score for h in want[:3]],
                               atol=1e-5)
    assert got[3]["match_score"] is None
    with pytest.raises(ValueError, match="no matching module"):
        create_app(built["baseline"], rerank=3, device="cpu", warmup=False)


def test_upload_round_trip_is_fast(client, built):
    p = Path(built["photos"][0])
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        assert _upload(client, p).status_code == 200
        times.append(time.perf_counter() - t0)
    med = sorted(times)[len(times) // 2]
    print(f"\nupload round trip (TestClient, tiny model): median {1000 * med:.1f} ms, "
          f"max {1000 * max(times):.1f} ms")
    assert med < 1.0


# ------------------------------------------------------------------ refusals
def test_too_large_upload_is_413_while_reading(index, built, tmp_path, monkeypatch):
    spool = tmp_path / "tmp"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))  # where the server's temporary folders go
    app = create_app(index, k=K, device="cpu", max_upload_mb=0.01, warmup=False)  # 10 KiB
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 120, 3), dtype=np.uint8)).save(big)
    assert big.stat().st_size > 0.01 * 2**20
    with TestClient(app, base_url=LOCAL) as c:
        msg = _readable(_upload(c, big), 413)
        assert "larger than this server accepts" in msg and "0.01 MB" in msg
        # a small photo still passes
        assert _upload(c, Path(built["photos"][0])).status_code == 200
    assert list(spool.iterdir()) == []  # every temporary folder was deleted


def test_the_cap_is_enforced_while_the_body_streams_in(tmp_path):
    """No Content-Length (a chunked upload): reading stops one chunk past the cap, for a raw body
    and for a multipart file part, and nothing past the cap reaches the disk."""
    import asyncio

    from malm.search.serve import ServeError, read_upload

    class Streaming:  # the part of starlette's Request that read_upload uses
        def __init__(self, content_type: str, head: bytes = b""):
            self.headers = {"content-type": content_type}
            self.head, self.pulled = head, 0

        async def stream(self):
            yield self.head
            for _ in range(1000):  # 64 MB if it were all read
                self.pulled += 1
                yield b"\0" * 65536

    limit = 100_000
    for i, req in enumerate([Streaming("application/octet-stream"), Streaming(
            "multipart/form-data; boundary=b0undary",
            b'--b0undary\r\nContent-Disposition: form-data; name="photo"; filename="a.jpg"\r\n\r\n')]):
        dest = tmp_path / f"upload{i}"
        with pytest.raises(ServeError) as err:
            asyncio.run(read_upload(req, dest, limit))
        assert err.value.status == 413 and "larger than this server accepts" in err.value.message
        assert req.pulled <= 3 and dest.stat().st_size <= limit
    # a declared Content-Length over the cap is refused before any byte is read
    req = Streaming("application/octet-stream")
    req.headers["content-length"] = str(limit + 1)
    with pytest.raises(ServeError, match="larger"):
        asyncio.run(read_upload(req, tmp_path / "declared", limit))
    assert req.pulled == 0


def test_bomb_broken_and_empty_files_get_readable_errors(client, tmp_path):
    msg = _readable(_upload(client, bomb(tmp_path / "bomb.png")), 400)
    assert "decompression-bomb" in msg and "900000000 pixels" in msg
    assert "truncated" in _readable(_upload(client, broken(tmp_path / "cut.jpg")), 400)
    (tmp_path / "notes.txt").write_text("not a photo\n")
    assert "not an image" in _readable(_upload(client, tmp_path / "notes.txt"), 400)
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert "empty" in _readable(_upload(client, tmp_path / "empty.jpg"), 400)
    r = client.post("/api/search", data={"note": "no file"},
                    headers={"content-type": "multipart/form-data; boundary=xyz"})
    _readable(r, 400)
    r = client.post("/api/search", files={"other": (None, b"just a field")})
    assert "no photo" in _readable(r, 400)


def test_only_loopback_hosts_are_answered_by_default(index):
    import inspect

    from malm.search import serve as S
    from malm.search.cli import make_parser

    assert DEFAULT_HOST == "127.0.0.1"
    assert inspect.signature(S.serve).parameters["host"].default == "127.0.0.1"
    assert inspect.signature(S.create_app).parameters["host"].default == "127.0.0.1"
    args = make_parser().parse_args(["serve", "--index", "x.npz"])
    assert (args.host, args.port, args.k, args.max_upload_mb) == ("127.0.0.1", 8000, 5, 10.0)
    app = create_app(index, k=K, device="cpu", warmup=False)
    with TestClient(app, base_url="http://evil.example") as c:  # a DNS-rebinding page's Host
        assert "only answers" in _readable(c.get("/api/info"), 400)
    for base in ("http://localhost:8000", "http://127.0.0.1:1234", "http://[::1]:80"):
        with TestClient(app, base_url=base) as c:
            assert c.get("/healthz").text == "ok", base
    opened = create_app(index, k=K, device="cpu", warmup=False, host="0.0.0.0")
    with TestClient(opened, base_url="http://kitchen.lan:8000") as c:
        assert c.get("/healthz").status_code == 200


# ------------------------------------------------------------------ attention
def test_attention_map_with_and_without_a_matching_module(client, built, tmp_path):
    p = Path(built["photos"][1])
    got = _upload(client, p).json()
    hit = got["hits"][0]
    line = hit["ingredients"][0]["line"]
    r = client.get("/api/attention", params={"photo": got["photo"], "row": hit["row"], "line": line})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    im = Image.open(io.BytesIO(r.content))
    assert im.format == "PNG" and im.width > 2 * im.height * 0.9 and im.height >= 300
    a = np.asarray(im.convert("RGB"))
    assert a[:, im.width // 2 + 10:].std() > 10  # the map panel is not blank
    # another line of the same pair draws another map; bad requests are readable
    if len(hit["ingredients"]) > 1:
        r2 = client.get("/api/attention", params={"photo": got["photo"], "row": hit["row"],
                                                   "line": hit["ingredients"][1]["line"]})
        assert r2.status_code == 200 and r2.content != r.content
    assert "upload it again" in _readable(client.get("/api/attention", params={
        "photo": "not-a-key", "row": hit["row"], "line": 0}), 404)
    assert "no ingredient line" in _readable(client.get("/api/attention", params={
        "photo": got["photo"], "row": hit["row"], "line": len(hit["ingredients"])}), 400)
    assert "outside" in _readable(client.get("/api/attention", params={
        "photo": got["photo"], "row": hit["row"], "line": 999}), 400)
    assert "no recipe row" in _readable(client.get("/api/attention", params={
        "photo": got["photo"], "row": 10**6, "line": 0}), 400)
    assert "bad request" in _readable(client.get("/api/attention", params={
        "photo": got["photo"], "row": "x", "line": 0}), 400)
    # a run without a matching module: results, and a clear message instead of a map
    base = create_app(built["baseline"], k=K, device="cpu")
    with TestClient(base, base_url=LOCAL) as c:
        info = c.get("/api/info").json()
        assert info["attention"] is False and "no matching module" in info["attention_note"]
        res = _upload(c, p).json()
        assert len(res["hits"]) == K and res["photo"] is None and res["attention"] is False
        assert all(e["line"] is None for h in res["hits"] for e in h["ingredients"])
        msg = _readable(c.get("/api/attention", params={"photo": "x", "row": 0, "line": 0}), 409)
        assert "no matching module" in msg and "attention map" in msg


# ------------------------------------------------------------------ a real server
def _free_server(app):
    import uvicorn

    from malm.search.serve import bind, url_of

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = url_of(sock)
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    return server, thread, sock, url


def test_a_slow_search_blocks_neither_pages_nor_other_uploads(index, built):
    import httpx

    app = create_app(index, k=K, device="cpu", workers=2)
    searcher = app.state.searcher
    real = searcher.search_file
    gate, entered = threading.Event(), threading.Event()
    calls = []

    def slow_first(path):
        calls.append(path)
        if len(calls) == 1:
            entered.set()
            assert gate.wait(30)
        return real(path)

    searcher.search_file = slow_first
    server, thread, sock, url = _free_server(app)
    p = Path(built["photos"][2])
    results = {}

    def first():
        with httpx.Client(timeout=60) as c:
            results["first"] = c.post(url + "api/search", files={"photo": p.read_bytes()})

    try:
        t = threading.Thread(target=first)
        t.start()
        assert entered.wait(30)  # the first photo is being "searched" in a worker thread
        with httpx.Client(timeout=10) as c:
            t0 = time.perf_counter()
            assert c.get(url).status_code == 200
            assert c.get(url + "api/info").status_code == 200
            second = c.post(url + "api/search", files={"photo": p.read_bytes()})
            elapsed = time.perf_counter() - t0
        assert second.status_code == 200 and len(second.json()["hits"]) == K
        assert elapsed < 5 and "first" not in results  # answered while the first still waits
        gate.set()
        t.join(30)
        assert results["first"].status_code == 200
        assert [h["id"] for h in results["first"].json()["hits"]] == \
            [h["id"] for h in second.json()["hits"]]
    finally:
        gate.set()
        server.should_exit = True
        thread.join(10)
        sock.close()
        app.state.pool.shutdown()


def test_cli_serves_on_a_free_port_and_documents_every_option(built, capsys):
    from malm.search import add_serve_parser

    parser = argparse.ArgumentParser(prog="malm")
    sub = parser.add_subparsers(dest="command", required=True)
    p = add_serve_parser(sub)
    for action in p._actions:
        assert action.help, action.dest
    assert parser.parse_args(["serve", "--index", "i.npz", "--port", "0"]).port == 0
    from malm.search.serve import bind

    with bind("127.0.0.1", 0) as s:
        assert s.proto == socket.IPPROTO_TCP and s.getsockname()[1] > 0
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--index", "i.npz", "--max-upload-mb", "0"])

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "malm.search", "serve", "--index", str(built["malm"]),
                             "--port", "0", "--device", "cpu", "--k", "3"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.fullmatch(r"malm serve: (http://127\.0\.0\.1:(\d+)/)\n", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
        import httpx

        with httpx.Client(timeout=10) as c:
            assert c.get(m.group(1) + "api/info").json()["k"] == 3
            # keep-alive answers are not held back by Nagle + delayed ACK (~40 ms each): the
            # listening socket is IPPROTO_TCP, so asyncio sets TCP_NODELAY on every connection
            times = []
            for _ in range(10):
                t0 = time.perf_counter()
                assert c.get(m.group(1)).status_code == 200
                times.append(time.perf_counter() - t0)
            assert sorted(times)[5] < 0.035, times
        # bound to loopback only
        with socket.create_connection(("127.0.0.1", int(m.group(2))), timeout=5):
            pass
    finally:
        proc.terminate()
        proc.wait(20)
    err = proc.stderr.read()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it: killed by SIGTERM, no traceback
    assert proc.returncode in (0, -signal.SIGTERM) and "Traceback" not in err, err


def test_cli_errors_are_one_line(tmp_path, capsys):
    from malm.search.cli import main

    capsys.readouterr()
    assert main(["serve", "--index", str(tmp_path / "missing.npz"), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "no such index file" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
