"""Official checkpoints through huggingface_hub, against a Hub stand-in on 127.0.0.1 (never the internet).

Every test has its own Hugging Face cache, varlite folder ($VARLITE_HOME) and server ($HF_ENDPOINT). A tiny VAR
file stands in for var_d16.pth: the official d16 layout is replaced by the tiny one for the layout check.
"""
from __future__ import annotations

import io
import os
import time

import pytest
import torch
from huggingface_hub import constants

from tests.http_server import HubServer
from varlite import download, pretrained
from varlite.core.configs import get_preset
from varlite.core.var import VAR
from varlite.core.vqvae import VQVAE
from varlite.download import DownloadError, hub_download
from varlite.pretrained import LayoutMismatchError, download_official, official_path


def to_bytes(state_dict: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    return buffer.getvalue()


@pytest.fixture
def tiny_bytes(ref_state_dicts) -> tuple[bytes, bytes]:
    """(VQVAE, VAR) files of the tiny preset, as bytes."""
    return to_bytes(ref_state_dicts[0]), to_bytes(ref_state_dicts[1])


@pytest.fixture
def places(tmp_path, monkeypatch):
    """An empty Hugging Face cache and varlite folder for this test; online; the tiny layout stands in for d16."""
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("VARLITE_HOME", str(tmp_path / "varlite_home"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    tiny_rows = [[k, list(s), "parameter"] for k, s in pretrained.expected_layout(
        VAR(get_preset("tiny").var, VQVAE(get_preset("tiny").vqvae)))]
    layouts = dict(pretrained.official_layouts())
    layouts["var_d16"] = {**layouts["var_d16"], "tensors": tiny_rows}
    monkeypatch.setattr(pretrained, "official_layouts", lambda: layouts)
    return tmp_path / "hf" / "hub", tmp_path / "varlite_home"


@pytest.fixture
def serve(monkeypatch):
    """serve(files, **options) starts a HubServer and points HF_ENDPOINT at it; stopped after the test."""
    servers = []

    def start(files: dict[str, bytes], **options) -> HubServer:
        servers.append(HubServer(files, **options).start())
        monkeypatch.setenv("HF_ENDPOINT", servers[-1].endpoint)
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def test_a_download_lands_in_the_hf_cache_verified_and_is_not_fetched_again(places, serve, tiny_bytes):
    hub_cache, _ = places
    server = serve({"var_d16.pth": tiny_bytes[1]})
    path = download_official("d16", progress=False)
    assert path.is_relative_to(hub_cache) and path.read_bytes() == tiny_bytes[1]
    assert official_path("d16") == path and pretrained.verify_official("d16") == path
    assert [p for p, _ in server.gets()] == ["/FoundationVision/var/resolve/main/var_d16.pth"]
    requests = len(server.requests)
    assert download_official("d16", progress=False) == path
    assert len(server.requests) == requests                 # found on disk and verified: no request at all


def test_a_cdn_redirect_is_followed(places, serve, tiny_bytes):
    server = serve({"var_d16.pth": tiny_bytes[1]}, cdn=True)
    path = download_official("d16", progress=False)
    assert path.read_bytes() == tiny_bytes[1]
    assert [p.split("/")[1] for p, _ in server.gets()] == ["cdn"]


def test_a_flat_cache_dir_gets_the_file_by_its_name(places, serve, tiny_bytes, tmp_path):
    serve({"var_d16.pth": tiny_bytes[1]})
    path = download_official("d16", tmp_path / "flat", progress=False)
    assert path == tmp_path / "flat" / "var_d16.pth" == official_path("d16", tmp_path / "flat")
    assert path.read_bytes() == tiny_bytes[1]


def test_a_cut_connection_is_resumed_from_where_it_stopped(places, serve):
    """huggingface_hub writes in blocks of 10 MiB: a cut after 11 MB resumes with a Range request past 0."""
    payload = os.urandom(12_000_000)
    server = serve({"big.bin": payload}, cut_first_get_after=11_000_000)
    path = hub_download("FoundationVision/var", "big.bin", "main", progress=False)
    assert path.read_bytes() == payload
    (_, first), (_, second) = server.gets()
    assert first is None and second.startswith("bytes=") and 0 < int(second[6:].rstrip("-")) <= 11_000_000


def test_a_cut_official_download_completes_and_is_verified(places, serve, tiny_bytes):
    server = serve({"var_d16.pth": tiny_bytes[1]}, cut_first_get_after=len(tiny_bytes[1]) // 3)
    path = download_official("d16", progress=False)
    assert path.read_bytes() == tiny_bytes[1] and len(server.gets()) == 2


def test_a_damaged_download_is_refused_set_aside_and_never_used(places, serve, tiny_bytes):
    _, home = places
    serve({"var_d16.pth": tiny_bytes[0]})                   # the VQVAE, served as the VAR file
    with pytest.raises(LayoutMismatchError, match="missing key") as info:
        download_official("d16", progress=False)
    assert "moved aside to" in str(info.value) and "var_d16.pth.rejected and is not used" in str(info.value)
    assert official_path("d16") == home / "var_d16.pth" and not official_path("d16").exists()
    rejected = list(places[0].rglob("var_d16.pth.rejected"))
    assert len(rejected) == 1 and rejected[0].read_bytes() == tiny_bytes[0]
    assert not list(places[0].rglob("blobs/*"))             # the bad blob is gone: a rerun downloads again
    serve({"var_d16.pth": tiny_bytes[1]})
    assert download_official("d16", progress=False).read_bytes() == tiny_bytes[1]


def test_a_damaged_copy_in_varlite_home_is_set_aside_and_downloaded_anew(places, serve, tiny_bytes):
    _, home = places
    home.mkdir(parents=True)
    junk = b"\x80" + bytes(range(200))
    (home / "var_d16.pth").write_bytes(junk)
    with pytest.raises(pretrained.CorruptCheckpointError, match=f"{home / 'var_d16.pth'} is a damaged legacy"):
        pretrained.verify_official("d16")
    serve({"var_d16.pth": tiny_bytes[1]})
    path = download_official("d16", progress=False)
    assert path.is_relative_to(places[0]) and path.read_bytes() == tiny_bytes[1]
    assert (home / "var_d16.pth.rejected").read_bytes() == junk and not (home / "var_d16.pth").exists()


def test_files_in_varlite_home_are_used_without_a_download(places, serve, tiny_bytes):
    _, home = places
    home.mkdir(parents=True)
    (home / "vae_ch160v4096z32.pth").write_bytes(tiny_bytes[0])
    (home / "var_d16.pth").write_bytes(tiny_bytes[1])
    server = serve({"var_d16.pth": b"never served"})
    assert download_official("d16", progress=False) == home / "var_d16.pth"
    vqvae, var = pretrained.load_official(16, device="cpu")
    assert var.config == get_preset("tiny").var and var.source["what"] == str(home / "var_d16.pth")
    assert server.requests == []


def test_offline_mode_fails_at_once_saying_what_to_do_and_uses_the_cache(places, serve, tiny_bytes, monkeypatch):
    _, home = places
    server = serve({"var_d16.pth": tiny_bytes[1]})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(DownloadError) as info:
        download_official("d16", progress=False)
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert "offline (HF_HUB_OFFLINE=1)" in message and "Unset HF_HUB_OFFLINE" in message
    assert "by hand" in message and str(home / "var_d16.pth") in message
    assert server.requests == []
    monkeypatch.delenv("HF_HUB_OFFLINE")
    path = download_official("d16", progress=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert download_official("d16", progress=False) == path          # offline, from the cache


def test_a_hanging_server_fails_after_the_stall_timeout(places, serve):
    serve({"var_d16.pth": b"x"}, hang=True)
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"no answer in 2 s \(the server or the connection is stalled\)"):
        download_official("d16", progress=False, stall_s=2)
    assert time.monotonic() - start < 6


def test_a_trickling_server_is_stopped_at_the_deadline_leaving_no_partial_file(places, serve):
    serve({"var_d16.pth": os.urandom(10_000)}, trickle_s=0.3)
    start = time.monotonic()
    with pytest.raises(DownloadError, match="after 3 s, its deadline. The connection is too slow"):
        download_official("d16", progress=False, stall_s=2, deadline_s=3)
    assert time.monotonic() - start < 3 + download.STOP_GRACE_S + 5
    assert not [p for p in places[0].rglob("*") if p.is_file() and "blobs" in p.parts]


def test_a_worker_killed_before_it_could_clean_up_leaves_no_partial_file_either(places, serve, monkeypatch):
    """The worker has no time to handle the interrupt (as when a read blocks on a trickling server): the partial
    file it was writing is removed by the process that started it; partial files of other downloads stay."""
    monkeypatch.setattr(download, "STOP_GRACE_S", 0.0)
    serve({"var_d16.pth": os.urandom(10_000)}, trickle_s=0.3)
    other = places[0] / "models--FoundationVision--var" / "blobs" / "another-file.1234abcd.incomplete"
    other.parent.mkdir(parents=True)
    other.write_bytes(b"someone else's download")
    with pytest.raises(DownloadError, match="after 6 s, its deadline"):
        download_official("d16", progress=False, stall_s=2, deadline_s=6)
    assert [p for p in places[0].rglob("*") if p.is_file() and "blobs" in p.parts] == [other]


def test_an_unreachable_endpoint_says_offline(places, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(DownloadError, match="You seem to be offline") as info:
        download_official("vae", progress=False, stall_s=2)
    assert "vae_ch160v4096z32.pth" in str(info.value) and "HF_ENDPOINT" in str(info.value)


def test_a_missing_file_is_an_http_error(places, serve):
    serve({"other.pth": b"x"})
    with pytest.raises(DownloadError, match="answered HTTP 404"):
        download_official("d16", progress=False)


def test_delete_official_removes_the_link_and_its_blob(places, serve, tiny_bytes):
    server = serve({"var_d16.pth": tiny_bytes[1]})
    path = download_official("d16", progress=False)
    blob = path.resolve()
    pretrained.delete_official("d16")
    assert not path.exists() and not path.is_symlink() and not blob.exists()
    download_official("d16", progress=False)
    assert len(server.gets()) == 2


def test_the_download_command_asks_the_endpoint_and_says_offline_without_a_traceback(places, serve, tiny_bytes,
                                                                                      monkeypatch, capsys):
    """`varlite download d16` fetches from $HF_ENDPOINT; with HF_HUB_OFFLINE=1 it fails at once (exit 1, a network
    state, not a user mistake) with a message and no traceback."""
    from varlite.cli import main as cli_main
    server = serve({"var_d16.pth": tiny_bytes[1]})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    assert cli_main(["download", "d16", "--no-vae", "--quiet"]) == 1
    assert time.monotonic() - start < 5
    err = capsys.readouterr().err
    assert "offline (HF_HUB_OFFLINE=1)" in err and "Traceback" not in err and server.requests == []
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert cli_main(["download", "d16", "--no-vae", "--quiet"]) == 0
    assert any(path.endswith("/FoundationVision/var/resolve/main/var_d16.pth") for _, path, _ in server.requests)
    assert official_path("d16").is_file()


def test_the_installed_command_offline_prints_no_traceback(tmp_path):
    import subprocess
    import sys
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "VARLITE_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-m", "varlite", "download", "d16", "--quiet"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 1 and "offline" in done.stderr and "Traceback" not in done.stderr, done.stderr
