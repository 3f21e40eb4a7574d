"""Tests of varlite.download's own client (CIFAR-10's) against a local HTTP server on 127.0.0.1 (never the internet).
The official files' downloads through huggingface_hub: tests/test_hf_download.py."""
import hashlib
import random
import socket
import time

import pytest

from tests.http_server import PayloadServer
from varlite import download
from varlite.download import DownloadError, download_file, varlite_home

PAYLOAD = random.Random(0).randbytes(100_000)


@pytest.fixture(autouse=True)
def no_retry_pause(monkeypatch):
    monkeypatch.setattr(download, "RETRY_PAUSE_S", 0.0)


@pytest.fixture
def serve():
    """serve(**options) starts a PayloadServer for PAYLOAD; every server is stopped after the test."""
    servers = []

    def start(**options):
        servers.append(PayloadServer(PAYLOAD, **options).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def test_full_download(serve, tmp_path):
    server = serve()
    dest = download_file(server.url, tmp_path / "sub" / "file.bin", progress=False)
    assert dest == tmp_path / "sub" / "file.bin"
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "sub" / "file.bin.part").exists()
    assert server.requests == [None]


def test_md5_checked_and_existing_file_not_fetched_again(serve, tmp_path):
    server = serve()
    md5 = hashlib.md5(PAYLOAD).hexdigest()
    dest = download_file(server.url, tmp_path / "file.bin", progress=False, md5=md5)
    assert dest.read_bytes() == PAYLOAD
    download_file(server.url, dest, progress=False, md5=md5)
    assert server.requests == [None]


def test_existing_file_with_wrong_checksum_is_replaced(serve, tmp_path):
    server = serve()
    dest = tmp_path / "file.bin"
    dest.write_bytes(b"stale")
    download_file(server.url, dest, md5=hashlib.md5(PAYLOAD).hexdigest(), progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_checksum_mismatch_deletes_part_and_says_expected_and_got(serve, tmp_path):
    server = serve()
    dest = tmp_path / "file.bin"
    with pytest.raises(DownloadError) as info:
        download_file(server.url, dest, md5="0" * 32, progress=False)
    message = str(info.value)
    assert "md5 mismatch" in message and "0" * 32 in message and hashlib.md5(PAYLOAD).hexdigest() in message
    assert not dest.exists() and not (tmp_path / "file.bin.part").exists()


def test_resumes_from_existing_part_file_with_a_range_request(serve, tmp_path):
    server = serve()
    (tmp_path / "file.bin.part").write_bytes(PAYLOAD[:40_000])
    dest = download_file(server.url, tmp_path / "file.bin", progress=False)
    assert server.requests == ["bytes=40000-"]
    assert dest.read_bytes() == PAYLOAD


def test_connection_cut_midway_is_resumed_and_file_is_identical(serve, tmp_path):
    server = serve(cut_first_request_after=30_000)
    dest = download_file(server.url, tmp_path / "file.bin", md5=hashlib.md5(PAYLOAD).hexdigest(), progress=False)
    assert server.requests == [None, "bytes=30000-"]
    assert dest.read_bytes() == PAYLOAD


def test_connection_cut_without_retries_keeps_the_part_and_never_writes_dest(serve, tmp_path):
    server = serve(cut_first_request_after=30_000)
    dest = tmp_path / "file.bin"
    with pytest.raises(DownloadError, match="30000 bytes already in"):
        download_file(server.url, dest, retries=0, progress=False)
    assert not dest.exists()
    assert (tmp_path / "file.bin.part").read_bytes() == PAYLOAD[:30_000]
    download_file(server.url, dest, retries=0, progress=False)      # a rerun resumes
    assert server.requests == [None, "bytes=30000-"]
    assert dest.read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_from_zero(serve, tmp_path):
    server = serve(ignore_range=True)
    (tmp_path / "file.bin.part").write_bytes(b"\0" * 40_000)
    dest = download_file(server.url, tmp_path / "file.bin", progress=False)
    assert server.requests == ["bytes=40000-"]
    assert dest.read_bytes() == PAYLOAD


def test_complete_part_file_answered_416_is_accepted(serve, tmp_path):
    server = serve()
    (tmp_path / "file.bin.part").write_bytes(PAYLOAD)
    dest = download_file(server.url, tmp_path / "file.bin", progress=False)
    assert server.requests == [f"bytes={len(PAYLOAD)}-"]
    assert dest.read_bytes() == PAYLOAD


def test_http_404_is_a_download_error(serve, tmp_path):
    server = serve()
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(server.url + ".missing", tmp_path / "file.bin", progress=False)


def test_unreachable_host_gives_a_helpful_message(tmp_path):
    with socket.socket() as sock:          # a port that was free a moment ago: nothing listens there now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/file.bin"
    dest = tmp_path / "file.bin"
    with pytest.raises(DownloadError) as info:
        download_file(url, dest, stall_s=2.0, progress=False)
    message = str(info.value)
    assert url in message and "offline" in message and "by hand" in message and str(dest) in message
    assert not dest.exists()


def test_a_server_that_accepts_then_hangs_fails_after_the_stall_timeout(serve, tmp_path):
    server = serve(hang=True)
    start = time.monotonic()
    with pytest.raises(DownloadError) as info:
        download_file(server.url, tmp_path / "file.bin", stall_s=0.5, retries=2, progress=False)
    assert time.monotonic() - start < 5                      # 3 reads of 0.5 s, no pauses in the tests
    assert "no byte for 0.5 s, 3 times in a row (a stalled server or connection)" in str(info.value)
    assert len(server.requests) == 3


def test_a_trickle_is_stopped_at_the_deadline_and_keeps_its_bytes(serve, tmp_path):
    server = serve(trickle_s=0.2)                            # one byte every 0.2 s: never a stall
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"past its deadline of 2 s\. The connection is too slow") as info:
        download_file(server.url, tmp_path / "file.bin", stall_s=1, deadline_s=2, progress=False)
    assert time.monotonic() - start < 4
    kept = (tmp_path / "file.bin.part").read_bytes()
    assert 3 <= len(kept) <= 15 and kept == PAYLOAD[:len(kept)] and f"The {len(kept)} bytes in" in str(info.value)
    assert not (tmp_path / "file.bin").exists() and len(server.requests) == 1


def test_the_default_deadline_allows_half_a_megabyte_per_second():
    assert download.default_deadline_s(None) == 600
    assert download.default_deadline_s(170_000_000) == 600 + 340


def test_progress_bar_is_drawn_on_stderr_only_when_enabled(serve, tmp_path, capsys):
    server = serve()
    download_file(server.url, tmp_path / "a.bin", chunk_size=16_384)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "a.bin" in captured.err and "100%" in captured.err and "100k/100k" in captured.err
    download_file(server.url, tmp_path / "b.bin", progress=False)
    assert capsys.readouterr().err == ""


def test_varlite_home_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("VARLITE_HOME", str(tmp_path / "home"))
    assert varlite_home() == tmp_path / "home"
    assert (tmp_path / "home").is_dir()
    monkeypatch.delenv("VARLITE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert varlite_home() == tmp_path / "user" / ".cache" / "varlite"
