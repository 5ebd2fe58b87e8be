"""avemo.hub and `avemo weights`: manifest, cache, verified resumable downloads, resolution.

Downloads come from a loopback HTTP server started by the tests (tests/loopback.py: 127.0.0.1, a
free port), which can serve byte ranges, cut a connection midway, stall, answer 404, a web page or
Google Drive's large-file confirmation page. Nothing here touches the real URLs of the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import sys
from pathlib import Path
from unittest import mock

import loopback
import pytest

from avemo import cli, download, hub
from avemo.errors import AvemoError
from avemo.models import layouts

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = bytes(range(256)) * 1200  # 307,200 bytes: several read chunks of the client
OTHER = b"not the weights" * 1000


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def server():
    srv, thread = loopback.start()
    yield srv
    loopback.stop(srv, thread)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """Every test gets its own empty cache."""
    home = tmp_path / "cache"
    monkeypatch.setenv("AVEMO_HOME", str(home))
    return home


def entry(name: str = "demo", **fields) -> dict:
    raw = {
        "name": name,
        "component": "head",
        "file": f"{name}.pt",
        "bundled": False,
        "size": None,
        "sha256": None,
        "licence": "test",
        "urls": [],
        "source": "tests",
        "matches": "tests",
        "import_format": "jmt",
        "notes": "sha256 unknown (test entry)",
    }
    raw.update(fields)
    return raw


def manifest(tmp_path: Path, *entries: dict) -> dict[str, hub.Weights]:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"format": 1, "weights": list(entries)}))
    return hub.load_manifest(path)


def served(server: loopback.Server, tmp_path: Path, data: bytes = PAYLOAD, **fields):
    """A manifest with one entry ``demo`` served at /demo.pt; fields override the entry."""
    server.files["/demo.pt"] = data
    fields.setdefault("urls", [server.url("/demo.pt")])
    return manifest(tmp_path, entry(**fields))


# --- manifest ----------------------------------------------------------------------------------


def test_real_manifest_lists_the_published_weights_with_valid_fields():
    path = ROOT / "weights" / "manifest.json"
    raw = json.loads(path.read_text())
    for item in raw["weights"]:
        assert set(hub.REQUIRED_KEYS) <= set(item), item["name"]
        assert item["sha256"] is None or re.fullmatch(r"[0-9a-f]{64}", item["sha256"])
    weights = hub.load_manifest(path)
    required = {
        "fer-mini-xception",
        "r2plus1d-18-kinetics400",
        "r3d-18-kinetics400",
        "i3d-rgb-imagenet",
        "i3d-rgb-charades",
        "tsav-affwild2-sub4",
        "jca-journal",
    }
    assert required <= set(weights)
    assert weights["fer-mini-xception"].bundled
    formats = {w.import_format for w in weights.values() if not w.bundled}
    assert formats == set(layouts.FORMATS)
    for name in ("r2plus1d-18-kinetics400", "r3d-18-kinetics400"):
        w = weights[name]  # torchvision: the file name's 8 hex digits are the hash's prefix
        assert w.sha256 is None and w.sha256_prefix and w.sha256_prefix in w.urls[0]
    assert weights["jca-journal"].file == "jointcam_model.pt"


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"sha256": "abc123"}, "'sha256'"),
        ({"sha256": "A" * 64}, "'sha256'"),
        ({"component": "backbone"}, "'component'"),
        ({"import_format": "onnx"}, "'import_format'"),
        ({"file": "../evil.pt"}, "'file'"),
        ({"urls": ["ftp://host/x.pt"]}, "'urls'"),
        ({"size": -3}, "'size'"),
        ({"notes": "a file"}, "unknown"),
        ({"sha256_prefix": "deadbeef", "sha256": "0" * 64}, "sha256_prefix"),
        ({"colour": "blue"}, "unknown keys: colour"),
        ({"licence": None}, "'licence'"),
    ],
)
def test_manifest_validation_names_the_problem(tmp_path, change, complaint):
    with pytest.raises(AvemoError, match=re.escape(complaint)) as error:
        manifest(tmp_path, entry(**change))
    assert "manifest.json" in str(error.value)


def test_manifest_validation_missing_key_and_duplicate(tmp_path):
    broken = entry()
    del broken["licence"]
    with pytest.raises(AvemoError, match="missing keys: licence"):
        manifest(tmp_path, broken)
    with pytest.raises(AvemoError, match="duplicate weights name 'demo'"):
        manifest(tmp_path, entry(), entry())


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("AVEMO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.cache_dir() == tmp_path / "home"
    monkeypatch.delenv("AVEMO_HOME")
    assert hub.cache_dir() == tmp_path / "xdg" / "avemo"
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert hub.cache_dir() == tmp_path / "user" / ".cache" / "avemo"


# --- pull --------------------------------------------------------------------------------------


def test_pull_downloads_verifies_and_records(server, tmp_path, cache):
    weights = served(server, tmp_path, sha256=sha(PAYLOAD), size=len(PAYLOAD))
    path = hub.pull("demo", manifest=weights, progress=False)
    assert path == cache / "weights" / "demo" / "demo.pt"
    assert path.read_bytes() == PAYLOAD
    assert not weights["demo"].part_path.exists()
    assert hub.load_state()["demo"]["sha256"] == sha(PAYLOAD)
    assert hub.pull("demo", manifest=weights) == path  # present and valid: no second download
    assert len(server.requests) == 1


def test_pull_resumes_after_a_cut_within_one_call(server, tmp_path):
    weights = served(server, tmp_path, sha256=sha(PAYLOAD))
    server.cut_at["/demo.pt"] = 100_000
    path = hub.pull("demo", manifest=weights, retries=1, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == [("/demo.pt", None), ("/demo.pt", "bytes=100000-")]


def test_pull_keeps_the_part_and_the_next_call_resumes(server, tmp_path):
    weights = served(server, tmp_path, sha256=sha(PAYLOAD))
    server.cut_at["/demo.pt"] = 123_456
    with pytest.raises(AvemoError, match="interrupted.*123456 bytes kept.*run the same command"):
        hub.pull("demo", manifest=weights, retries=0, progress=False)
    assert weights["demo"].part_path.read_bytes() == PAYLOAD[:123_456]
    assert not weights["demo"].path.exists()
    assert hub.pull("demo", manifest=weights, retries=0).read_bytes() == PAYLOAD
    assert server.requests[-1] == ("/demo.pt", "bytes=123456-")


def test_pull_restarts_when_the_server_ignores_the_range(server, tmp_path):
    weights = served(server, tmp_path, sha256=sha(PAYLOAD))
    server.modes["/demo.pt"] = "ignore-range"
    server.cut_at["/demo.pt"] = 50_000
    assert hub.pull("demo", manifest=weights, retries=1).read_bytes() == PAYLOAD


def test_pull_starts_over_when_the_part_is_longer_than_the_file(server, tmp_path):
    weights = served(server, tmp_path, sha256=sha(PAYLOAD))
    part = weights["demo"].part_path
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * (len(PAYLOAD) + 10))  # a stale part of some other file: HTTP 416
    assert hub.pull("demo", manifest=weights).read_bytes() == PAYLOAD


def test_pull_wrong_hash_deletes_the_file_and_fails(server, tmp_path):
    weights = served(server, tmp_path, sha256=sha(OTHER))
    with pytest.raises(AvemoError, match=f"sha256 {sha(PAYLOAD)}, expected {sha(OTHER)}"):
        hub.pull("demo", manifest=weights)
    folder = weights["demo"].path.parent
    assert not list(folder.iterdir())  # no file, no part, no lock


@pytest.mark.parametrize("mode", ["404", "ok", "wrong-hash", "offline", "no-trust"])
def test_pull_leaves_no_lock_file_whatever_happens(server, tmp_path, mode):
    weights = served(server, tmp_path, sha256=sha(OTHER if mode == "wrong-hash" else PAYLOAD))
    if mode == "404":
        server.modes["/demo.pt"] = "404"
    elif mode == "offline":
        weights = manifest(
            tmp_path, entry(urls=["http://127.0.0.1:9/demo.pt"], sha256=sha(PAYLOAD))
        )
    elif mode == "no-trust":
        weights = served(server, tmp_path)
    try:
        hub.pull("demo", manifest=weights, retries=0, timeout=2)
    except AvemoError:
        assert mode != "ok"
    folder = weights["demo"].path.parent
    assert not list(folder.glob("*.lock"))
    assert (mode == "ok") == weights["demo"].path.is_file()


def test_a_removed_lock_is_never_shared(server, tmp_path):
    """A pull that opened the lock file before its holder removed it must not take that stale
    file's lock: it re-opens the name and locks the file there."""
    import fcntl

    weights = served(server, tmp_path, sha256=sha(PAYLOAD))
    lock_path = weights["demo"].path.with_name("demo.pt.lock")
    lock_path.parent.mkdir(parents=True)
    stale = open(lock_path, "w")
    lock_path.unlink()  # its holder finished: the name is free, this file is gone
    real_open = open
    opened = []

    def first_the_stale_file(path, *args, **kwargs):
        if Path(path) == lock_path and not opened:
            opened.append(path)
            return stale
        return real_open(path, *args, **kwargs)

    with mock.patch("builtins.open", first_the_stale_file):
        holder = real_open(lock_path, "w")  # someone else re-created and holds the name
        fcntl.flock(holder, fcntl.LOCK_EX)
        try:
            with pytest.raises(AvemoError, match="another avemo process"):
                hub.pull("demo", manifest=weights)
        finally:
            holder.close()
    assert opened  # the stale file was tried first, and then the real name was locked
    assert lock_path.exists()  # the other holder's lock was not removed


def test_pull_wrong_size_announced_by_the_server_fails_before_writing(server, tmp_path):
    weights = served(server, tmp_path, sha256=sha(PAYLOAD), size=len(PAYLOAD) + 1)
    with pytest.raises(AvemoError, match=f"serves {len(PAYLOAD)} bytes, the manifest says"):
        hub.pull("demo", manifest=weights)
    assert not weights["demo"].part_path.exists()


def test_pull_404_gives_the_manual_way(server, tmp_path):
    weights = served(server, tmp_path, sha256=sha(PAYLOAD))
    server.modes["/demo.pt"] = "404"
    with pytest.raises(AvemoError) as error:
        hub.pull("demo", manifest=weights)
    message = str(error.value)
    assert "HTTP 404" in message and "\n" not in message
    assert f"save it as {weights['demo'].path}" in message
    assert "`avemo weights verify demo`" in message
    assert not weights["demo"].path.exists()


def test_pull_falls_back_to_the_next_url(server, tmp_path):
    server.files["/mirror.pt"] = PAYLOAD
    urls = [server.url("/missing.pt"), server.url("/mirror.pt")]
    weights = served(server, tmp_path, sha256=sha(PAYLOAD), urls=urls)
    assert hub.pull("demo", manifest=weights).read_bytes() == PAYLOAD


def test_pull_timeout_before_any_answer(server, tmp_path):
    weights = served(server, tmp_path, sha256=sha(PAYLOAD))
    server.modes["/demo.pt"] = "stall-headers"
    with pytest.raises(AvemoError, match=r"no answer from .* within 0.3 s.*Manual way"):
        hub.pull("demo", manifest=weights, timeout=0.3)


def test_pull_timeout_midway_keeps_the_part(server, tmp_path):
    weights = served(server, tmp_path, sha256=sha(PAYLOAD))
    server.modes["/demo.pt"] = "stall-body"
    server.cut_at["/demo.pt"] = 70_000
    with pytest.raises(AvemoError, match="interrupted \\(no data for 0.5 s\\)"):
        hub.pull("demo", manifest=weights, timeout=0.5, retries=0)
    assert weights["demo"].part_path.stat().st_size == 70_000
    server.release.set()
    assert hub.pull("demo", manifest=weights).read_bytes() == PAYLOAD


def test_pull_offline_is_one_clear_line(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    weights = manifest(tmp_path, entry(sha256=sha(PAYLOAD), urls=[f"http://127.0.0.1:{port}/x"]))
    with pytest.raises(AvemoError) as error:
        hub.pull("demo", manifest=weights, timeout=2)
    message = str(error.value)
    assert message.startswith("cannot download demo: cannot reach 127.0.0.1 (offline?")
    assert f"download http://127.0.0.1:{port}/x and save it as" in message
    assert "\n" not in message


def test_pull_refuses_a_web_page(server, tmp_path):
    weights = served(server, tmp_path, sha256=sha(PAYLOAD))
    server.modes["/demo.pt"] = "html"
    with pytest.raises(AvemoError, match="answered with a web page, not the file"):
        hub.pull("demo", manifest=weights)
    assert not weights["demo"].part_path.exists()


def test_pull_follows_a_drive_confirmation_page_and_resumes_through_it(server, tmp_path):
    url = server.drive("1AbC", PAYLOAD)
    weights = manifest(tmp_path, entry(sha256=sha(PAYLOAD), urls=[url]))
    target = f"/download?id=1AbC&export=download&confirm=t&uuid={loopback.DRIVE_UUID}"
    server.cut_at[target] = 100_000
    path = hub.pull("demo", manifest=weights, retries=1, progress=False)
    assert path.read_bytes() == PAYLOAD
    page = "/uc?export=download&id=1AbC"
    # the page, the form's URL (with the page's cookie), then both again to resume
    assert server.requests == [
        (page, None), (target, None), (page, "bytes=100000-"), (target, "bytes=100000-")
    ]


def test_confirmation_url_formats():
    form = (
        '<form id="download-form" action="https://drive.usercontent.google.com/download" '
        'method="get"><input type="submit" value="Download anyway"/>'
        '<input type="hidden" name="id" value="1Tq"><input type="hidden" name="export" '
        'value="download"><input type="hidden" name="confirm" value="t">'
        '<input type="hidden" name="uuid" value="ab-c"></form>'
    )
    page_url = "https://drive.google.com/uc?export=download&id=1Tq"
    assert download.confirmation_url(form, page_url) == (
        "https://drive.usercontent.google.com/download?id=1Tq&export=download&confirm=t&uuid=ab-c"
    )
    link = '<a id="uc-download-link" href="/uc?export=download&amp;confirm=Xy_1&amp;id=1Tq">'
    assert download.confirmation_url(link, page_url) == (
        "https://drive.google.com/uc?export=download&confirm=Xy_1&id=1Tq"
    )
    json_page = '{"downloadUrl":"https://drive.usercontent.google.com/d?id\\u003d1Tq"}'
    assert download.confirmation_url(json_page, page_url) == (
        "https://drive.usercontent.google.com/d?id=1Tq"
    )
    assert download.confirmation_url("<html><body>Sign in</body></html>", page_url) is None


def test_pull_names_what_a_drive_error_page_says(server, tmp_path):
    weights = served(server, tmp_path, sha256=sha(PAYLOAD))
    server.modes["/demo.pt"] = "html"
    server.pages["/demo.pt"] = (
        b'<html><p class="uc-error-subcaption">Too many users have viewed or downloaded this '
        b"file recently.</p></html>"
    )
    with pytest.raises(AvemoError, match=r"web page, not the file \(Too many users have viewed"):
        hub.pull("demo", manifest=weights)


def test_unknown_hash_needs_trust_then_is_recorded_and_enforced(server, tmp_path):
    weights = served(server, tmp_path)
    with pytest.raises(AvemoError, match="no published sha256.*--trust"):
        hub.pull("demo", manifest=weights)
    assert server.requests == []  # refused before downloading anything
    path = hub.pull("demo", manifest=weights, trust=True)
    record = hub.load_state()["demo"]
    assert record["trusted"] and record["sha256"] == sha(PAYLOAD)
    assert record["url"] == server.url("/demo.pt")
    assert hub.resolve("demo", weights) == path
    # the recorded hash now guards the name: a changed upstream file is refused
    path.unlink()
    server.files["/demo.pt"] = OTHER
    with pytest.raises(AvemoError, match="recorded when you trusted it"):
        hub.pull("demo", manifest=weights, trust=True)
    assert not path.exists()


def test_sha256_prefix_is_checked_even_with_trust(server, tmp_path):
    weights = served(server, tmp_path, sha256_prefix="0123abcd")
    with pytest.raises(AvemoError, match="does not start with 0123abcd"):
        hub.pull("demo", manifest=weights, trust=True)
    good = served(server, tmp_path, sha256_prefix=sha(PAYLOAD)[:8])
    assert hub.pull("demo", manifest=good, trust=True).read_bytes() == PAYLOAD


def test_entry_without_urls_explains_the_manual_way(tmp_path):
    weights = manifest(tmp_path, entry())
    with pytest.raises(AvemoError, match="no public download.*save it as .*--trust"):
        hub.pull("demo", manifest=weights)


def test_concurrent_pull_of_the_same_file_is_refused(server, tmp_path):
    fcntl = pytest.importorskip("fcntl")
    weights = served(server, tmp_path, sha256=sha(PAYLOAD))
    lock_path = weights["demo"].path.with_name("demo.pt.lock")
    lock_path.parent.mkdir(parents=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(AvemoError, match="another avemo process is downloading demo"):
            hub.pull("demo", manifest=weights)


# --- verify and resolve ------------------------------------------------------------------------


def test_verify_detects_a_corrupted_cache_file_and_pull_repairs_it(server, tmp_path):
    weights = served(server, tmp_path, sha256=sha(PAYLOAD))
    path = hub.pull("demo", manifest=weights)
    assert [c.state for c in hub.verify(manifest=weights)] == ["ok"]
    data = bytearray(PAYLOAD)
    data[1000] ^= 0xFF
    path.write_bytes(bytes(data))  # same size: only the hash can tell
    (check,) = hub.verify("demo", manifest=weights)
    assert check.state == "mismatch" and check.failed
    assert "`avemo weights pull demo`" in check.message
    with pytest.raises(AvemoError, match="corrupt"):
        hub.resolve("demo", weights)
    assert hub.pull("demo", manifest=weights).read_bytes() == PAYLOAD
    assert hub.resolve("demo", weights) == path


def test_verify_trust_records_a_manually_placed_file(tmp_path):
    weights = manifest(tmp_path, entry())
    (check,) = hub.verify("demo", manifest=weights)
    assert check.state == "absent" and check.failed
    path = weights["demo"].path
    path.parent.mkdir(parents=True)
    path.write_bytes(OTHER)
    with pytest.raises(AvemoError, match="no known sha256.*verify demo --trust"):
        hub.resolve("demo", weights)
    (check,) = hub.verify("demo", manifest=weights)
    assert check.state == "unverified" and check.failed
    (check,) = hub.verify("demo", trust=True, manifest=weights)
    assert check.state == "recorded" and not check.failed
    assert hub.resolve("demo", weights) == path
    assert [c.state for c in hub.verify(manifest=weights)] == ["ok"]


def test_resolve_rules(server, tmp_path, monkeypatch):
    bundled = tmp_path / "package"
    bundled.mkdir()
    (bundled / "tiny.safetensors").write_bytes(b"bundled")
    monkeypatch.setattr(hub, "DIRECTORY", bundled)
    server.files["/demo.pt"] = PAYLOAD
    weights = manifest(
        tmp_path,
        entry(sha256=sha(PAYLOAD), urls=[server.url("/demo.pt")]),
        entry("tiny", file="tiny.safetensors", bundled=True, import_format=None),
    )
    own = tmp_path / "mine.safetensors"
    own.write_bytes(b"x")
    assert hub.resolve(own, weights) == own  # an existing path is used as it is
    assert hub.resolve("tiny", weights) == bundled / "tiny.safetensors"
    with pytest.raises(AvemoError, match="not downloaded yet: run `avemo weights pull demo`"):
        hub.resolve("demo", weights)
    with pytest.raises(AvemoError, match="weights file not found"):
        hub.resolve(tmp_path / "absent.safetensors", weights)
    with pytest.raises(AvemoError, match="unknown weights 'demmo': did you mean demo"):
        hub.resolve("demmo", weights)
    path = hub.pull("demo", manifest=weights)

    def no_hashing(*args):
        raise AssertionError("resolve re-hashed an unchanged, verified file")

    monkeypatch.setattr(hub, "sha256_file", no_hashing)
    assert hub.resolve("demo", weights) == path
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: hash again
    with pytest.raises(AssertionError, match="re-hashed"):
        hub.resolve("demo", weights)


# --- CLI ---------------------------------------------------------------------------------------


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["avemo", *args])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    out, err = capsys.readouterr()
    return exit_.value.code or 0, out, err


@pytest.fixture
def cli_manifest(server, tmp_path, monkeypatch):
    server.files["/demo.pt"] = PAYLOAD
    server.files["/open.pt"] = OTHER
    path = tmp_path / "cli-manifest.json"
    entries = [
        entry(sha256=sha(PAYLOAD), size=len(PAYLOAD), urls=[server.url("/demo.pt")]),
        entry("open", urls=[server.url("/open.pt")]),
    ]
    path.write_text(json.dumps({"format": 1, "weights": entries}))
    monkeypatch.setattr(hub, "MANIFEST_PATH", path)
    return hub.load_manifest(path)


def test_cli_list_info_pull_verify(cli_manifest, server, monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "weights", "list")
    assert code == 0
    assert re.search(r"^demo\s+head\s+jmt\s+300\.0 KiB\s+known\s+absent$", out, flags=re.M)
    assert re.search(r"^open\s+head\s+jmt\s+\?\s+unknown\s+absent$", out, flags=re.M)
    code, out, _ = run_cli(monkeypatch, capsys, "weights", "info", "demo")
    assert code == 0 and f"sha256:         {sha(PAYLOAD)}" in out
    code, out, err = run_cli(monkeypatch, capsys, "weights", "pull", "demo", "open")
    assert code == 1  # demo downloaded, open refused without --trust
    assert out.strip() == f"demo: {cli_manifest['demo'].path}"
    assert err.count("error:") == 1 and "--trust" in err
    code, out, _ = run_cli(monkeypatch, capsys, "weights", "pull", "open", "--trust")
    assert code == 0 and out.startswith("open: ")
    code, out, err = run_cli(monkeypatch, capsys, "weights", "verify")
    assert code == 0 and "demo: ok" in out and "open: ok" in out
    cli_manifest["open"].path.write_bytes(b"tampered")
    code, out, err = run_cli(monkeypatch, capsys, "weights", "verify", "open")
    assert code == 1 and "open: mismatch" in err


def test_cli_failures_are_one_line(cli_manifest, server, monkeypatch, capsys):
    server.modes["/demo.pt"] = "404"
    code, out, err = run_cli(monkeypatch, capsys, "weights", "pull", "demo")
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and "HTTP 404" in err
    code, _, err = run_cli(monkeypatch, capsys, "weights", "pull", "dmo")
    assert code == 2 and "unknown weights 'dmo'" in err and "Traceback" not in err
    assert server.requests == [("/demo.pt", None)]
