"""Downloads that end in bounded time, and varlite's own folder for downloaded files.

Two kinds of files are fetched:

- the official VAR checkpoints, with huggingface_hub (``hub_download``): the shared Hugging Face cache
  (``HF_HOME``), mirrors (``HF_ENDPOINT``), offline mode (``HF_HUB_OFFLINE=1``), retries that resume a cut
  connection, and its progress bar come with it;
- the CIFAR-10 tarball, with the small resumable HTTP client below (``download_file``): no maintained library
  serves it without a heavy dependency (torchvision, tensorflow-datasets), and one file with a published md5
  needs little.

Every download ends in bounded time, by two rules:

- stall: a read that receives no byte for ``stall_s`` seconds fails, and the download resumes from the bytes it
  has; after a few such failures in a row without a new byte (``retries`` here, 5 in huggingface_hub) it gives up;
- deadline: a download still running after ``deadline_s`` seconds is stopped. By default that is 10 minutes plus
  2 seconds per MB of the file (``default_deadline_s``): it must average at least 0.5 MB/s.

huggingface_hub has the stall rule (its ``HF_HUB_DOWNLOAD_TIMEOUT`` and ``etag_timeout``) but no overall
deadline, and its transfers (plain HTTP, or the Xet client in native code) cannot be stopped from another
thread. So ``hub_download`` runs it in a worker process (``python -m varlite.download``) and stops that process
at the deadline.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

STALL_S = 15                 # seconds without a byte before a read fails (a whole number: huggingface_hub wants one)
RETRY_PAUSE_S = 1.0          # the pause before retry k is k * RETRY_PAUSE_S seconds
STOP_GRACE_S = 5.0           # a stopped worker has this long to clean up after Ctrl-C before it is killed

# What a failing network raises (host unreachable, HTTP 5xx, timeouts, dropped connections), as opposed to local
# errors such as a full disk, which are not retried.
NETWORK_ERRORS = (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError, http.client.HTTPException)


class DownloadError(RuntimeError):
    """A download failed: offline, host unreachable, stalled, past its deadline, HTTP error, or the wrong file."""


def varlite_home() -> Path:
    """varlite's folder for downloaded data: ``$VARLITE_HOME`` if set, else ``~/.cache/varlite``; created on demand.

    CIFAR-10 goes there. Official checkpoints go to the Hugging Face cache, but copies found here (downloaded by
    earlier versions of varlite, or put here by hand) are used (see ``varlite.pretrained.official_path``)."""
    home = os.environ.get("VARLITE_HOME")
    path = Path(home).expanduser() if home else Path.home() / ".cache" / "varlite"
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_deadline_s(size_bytes: int | None) -> float:
    """10 minutes, plus 2 seconds per MB when the size is known: an average of at least 0.5 MB/s."""
    return 600.0 + (size_bytes or 0) / 500_000


# ------------------------------------------------------------------------------------------------ huggingface_hub
def hub_offline() -> bool:
    """huggingface_hub's offline mode: ``HF_HUB_OFFLINE`` set to 1, ON, YES or TRUE (read now, not at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def hub_cache() -> Path:
    """The shared Hugging Face cache folder (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
    ``~/.cache/huggingface/hub``), as huggingface_hub resolved it."""
    from huggingface_hub import constants
    return Path(constants.HF_HUB_CACHE)


def hub_cached(repo_id: str, filename: str, revision: str) -> Path | None:
    """The copy of ``filename`` in the Hugging Face cache, or None; no network access."""
    from huggingface_hub import try_to_load_from_cache
    found = try_to_load_from_cache(repo_id, filename, cache_dir=hub_cache(), revision=revision)
    return Path(found) if isinstance(found, str) else None


def hub_url(repo_id: str, filename: str, revision: str, endpoint: str | None = None) -> str:
    """The file's address on ``endpoint`` (default ``$HF_ENDPOINT``, else https://huggingface.co)."""
    from huggingface_hub import hf_hub_url
    return hf_hub_url(repo_id, filename, revision=revision, endpoint=_endpoint(endpoint))


def hub_download(repo_id: str, filename: str, revision: str, *, local_dir: str | os.PathLike | None = None,
                 endpoint: str | None = None, progress: bool = True, stall_s: int = STALL_S,
                 deadline_s: float | None = None, by_hand: Path | None = None) -> Path:
    """Download one file of a Hugging Face repository with ``huggingface_hub.hf_hub_download``; return its path.

    The file goes to the shared Hugging Face cache (``hub_cache()``), or into ``local_dir`` (as
    ``local_dir/filename``) if given. First one metadata request is made here, with a ``stall_s`` timeout: no
    answer, no connection or an HTTP error fail at once, with what to do. Then a worker process downloads, with
    huggingface_hub's read timeout set to ``stall_s`` (``HF_HUB_DOWNLOAD_TIMEOUT``); it is stopped when
    ``deadline_s`` (default: ``default_deadline_s`` of the file's size) has passed. huggingface_hub keeps no
    partial file between calls: a stopped download starts over the next time. Every failure is a DownloadError
    that says what happened and what to do (``by_hand``: where a copy fetched by hand is used).

    With ``HF_HUB_OFFLINE=1`` nothing is requested: DownloadError at once.
    """
    url = hub_url(repo_id, filename, revision, endpoint)
    remedy = _hub_remedy(url, by_hand)
    if hub_offline():
        raise DownloadError(f"{filename} is not in the Hugging Face cache ({hub_cache()}) and huggingface_hub is "
                            f"offline (HF_HUB_OFFLINE={os.environ['HF_HUB_OFFLINE']}), so it was not downloaded.\n"
                            f"Unset HF_HUB_OFFLINE and run again with a connection, or {remedy}")
    size, etag = _hub_probe(url, filename, stall_s, remedy)
    rule = "" if deadline_s is not None else (f" (10 min + 2 s per MB of its {(size or 0) / 1e6:.0f} MB: at least "
                                               f"0.5 MB/s on average)")
    deadline_s = default_deadline_s(size) if deadline_s is None else deadline_s
    request = {"repo_id": repo_id, "filename": filename, "revision": revision, "cache_dir": str(hub_cache()),
               "local_dir": None if local_dir is None else str(Path(local_dir).resolve()),
               "endpoint": _endpoint(endpoint), "etag_timeout": stall_s}
    env = {**os.environ, "HF_HUB_DOWNLOAD_TIMEOUT": str(int(stall_s))}
    if not progress:
        env["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    # `python -m varlite.download` run from the folder that holds the varlite package: found installed or not
    partials_root = hub_cache() / f"models--{repo_id.replace('/', '--')}" if local_dir is None else Path(local_dir)
    partials_before = _partials(partials_root, etag)
    worker = subprocess.Popen([sys.executable, "-m", "varlite.download", json.dumps(request)], env=env, text=True,
                              cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE)
    try:
        out, _ = worker.communicate(timeout=deadline_s)
    except subprocess.TimeoutExpired:
        _stop(worker, partials_root, etag, partials_before)
        raise DownloadError(f"Stopped downloading {filename} from {url} after {deadline_s:g} s, its deadline"
                            f"{rule}. The connection is too slow or the server sends too little.\nRun again later "
                            f"or with a longer deadline_s, or {remedy}") from None
    finally:
        if worker.poll() is None:      # an exception on its way (Ctrl-C): do not leave the worker running
            _stop(worker, partials_root, etag, partials_before)
    result = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"error": f"exit code {worker.returncode}"}
    if "error" in result:
        raise DownloadError(f"Downloading {filename} from {url} failed: {result['error']}\n"
                            f"(huggingface_hub resumes a cut connection, or one that sent no byte for {stall_s} s, "
                            f"a few times before it gives up.) Check your connection and run again, or {remedy}")
    return Path(result["path"])


def _endpoint(endpoint: str | None) -> str:
    return (endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _hub_remedy(url: str, by_hand: Path | None) -> str:
    place = f" and put it at {by_hand}" if by_hand is not None else ""
    return (f"use a mirror (set HF_ENDPOINT, e.g. HF_ENDPOINT=https://hf-mirror.com), or download the file by hand "
            f"from {url}{place}.")


def _hub_probe(url: str, filename: str, stall_s: float, remedy: str) -> tuple[int | None, str]:
    """One metadata request (HEAD) with a ``stall_s`` timeout: (the file's size if the server says it, its ETag). Raises
    DownloadError when the server does not answer, cannot be reached, answers an HTTP error, or is not a
    Hugging Face Hub endpoint."""
    from huggingface_hub import get_hf_file_metadata
    from huggingface_hub.utils import HfHubHTTPError
    start = time.monotonic()
    try:
        metadata = get_hf_file_metadata(url, timeout=stall_s)
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else "?"
        raise DownloadError(f"{url} answered HTTP {status}: {str(err).splitlines()[0]}\nIf the address is right, "
                            f"the file may have moved: {remedy}") from None
    except Exception as err:       # noqa: BLE001 -- the network library's errors differ by version; all mean this
        if time.monotonic() - start >= 0.9 * stall_s:
            reason = f"no answer in {stall_s} s (the server or the connection is stalled)"
        else:
            reason = f"{type(err).__name__}: {err}"
        raise DownloadError(f"Could not download {filename}: {reason}.\nYou seem to be offline, or {url} cannot "
                            f"be reached. Check your connection and run again, or {remedy}") from None
    if metadata.commit_hash is None or metadata.etag is None:
        raise DownloadError(f"{url} answered without the X-Repo-Commit and ETag headers of a Hugging Face Hub "
                            f"endpoint: check HF_ENDPOINT, your proxy and firewall, or {remedy}")
    return metadata.size, metadata.etag


def _partials(root: Path, etag: str) -> set[Path]:
    """The partial files huggingface_hub writes for the file with this ETag under ``root`` (``<etag>.<id>.incomplete``
    in the cache's blobs, or an ``.incomplete`` file naming it under a ``local_dir``'s ``.cache``)."""
    return {p for p in root.rglob("*.incomplete") if etag in p.name} if root.is_dir() else set()


def _stop(worker: subprocess.Popen, partials_root: Path, etag: str, partials_before: set[Path]) -> None:
    """Interrupt the worker as Ctrl-C would (huggingface_hub then deletes its partial file), kill it if it is
    still there after STOP_GRACE_S (a read blocked on a trickling server can outlast the interrupt) and then delete
    the partial file it left: those of this file that were not there before it started."""
    if os.name == "posix":
        worker.send_signal(signal.SIGINT)
    else:
        worker.terminate()
    try:
        worker.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
    for partial in _partials(partials_root, etag) - partials_before:
        partial.unlink(missing_ok=True)


def _hub_worker(request_json: str) -> int:
    """The worker process: ``hf_hub_download(**request)``; prints {"path": ...} or {"error": ...} as its last line."""
    try:
        from huggingface_hub import hf_hub_download
        path = hf_hub_download(**json.loads(request_json))
    except KeyboardInterrupt:      # stopped at the deadline (or Ctrl-C): the parent explains
        return 130
    except Exception as err:       # noqa: BLE001 -- every failure goes to the parent, which explains it
        print(json.dumps({"error": f"{type(err).__name__}: {err}"}))
        return 1
    print(json.dumps({"path": path}))
    return 0


# ------------------------------------------------------------------------------------------------ CIFAR-10's client
def download_file(url: str, dest: str | os.PathLike, *, md5: str | None = None, progress: bool = True,
                  stall_s: float = STALL_S, deadline_s: float | None = None, retries: int = 3,
                  chunk_size: int = 1 << 16) -> Path:
    """Download ``url`` to ``dest`` and return ``dest`` as a Path.

    Rules:
    - If ``dest`` exists (with the given md5), nothing is fetched. A ``dest`` is only ever created by an atomic
      rename of a finished, checked download, so with no md5 to check it is trusted.
    - Bytes are streamed into ``dest + ".part"``. An existing part file is resumed with ``Range: bytes=N-``;
      a server that answers 200 instead of 206 sends the whole file, so the part file restarts from zero.
    - Stall: a read that gets no byte for ``stall_s`` seconds fails. A failed read, a dropped connection or another
      network error is retried after a short pause, resuming from the bytes on disk; ``retries`` is the number of
      retries in a row that brought no new bytes before giving up.
    - Deadline: after ``deadline_s`` seconds (default ``default_deadline_s`` of the size the server announces) the
      download stops (at most ``stall_s`` later, the longest a read can wait); the part file is kept for a rerun.
    - The finished file must have as many bytes as the server announced and the given md5; a mismatch deletes the
      part file. Only then is it renamed onto ``dest`` (``os.replace``), so ``dest`` never exists half-written.
    Every failure is a DownloadError saying what happened and what to do.
    """
    dest = Path(dest)
    if dest.exists() and (md5 is None or _md5(dest) == md5.lower()):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    fetch = _Fetch(url, dest, part, stall_s=stall_s, deadline_s=deadline_s, chunk_size=chunk_size)
    failures_in_a_row = 0
    with tqdm(desc=dest.name, unit="B", unit_scale=True, disable=not progress, leave=True) as bar:
        while True:
            size_before = _size_on_disk(part)
            try:
                fetch.once(bar)
                break
            except NETWORK_ERRORS as err:
                if _size_on_disk(part) > size_before:
                    failures_in_a_row = 0
                failures_in_a_row += 1
                if failures_in_a_row > retries:
                    raise fetch.network_error(err, failures_in_a_row) from err
                time.sleep(RETRY_PAUSE_S * failures_in_a_row)
    if md5 is not None and (got := _md5(part)) != md5.lower():
        part.unlink()
        raise DownloadError(f"md5 mismatch for the file downloaded from {url}: expected {md5}, got {got}. The "
                            f"download is corrupt or the file on the server changed. The part file was deleted; "
                            f"run again, or download it by hand from {url} and put it at {dest}.")
    os.replace(part, dest)
    return dest


class _Fetch:
    """The requests of one ``download_file`` call: each appends the missing bytes to the part file."""

    def __init__(self, url: str, dest: Path, part: Path, *, stall_s: float, deadline_s: float | None,
                 chunk_size: int):
        self.url, self.dest, self.part = url, dest, part
        self.stall_s, self.deadline_s, self.chunk_size = stall_s, deadline_s, chunk_size
        self.start_time = time.monotonic()
        self.total: int | None = None

    def deadline(self) -> float:
        return self.deadline_s if self.deadline_s is not None else default_deadline_s(self.total)

    def once(self, bar: tqdm) -> None:
        """One HTTP request. Returns when the server's file is complete; raises one of NETWORK_ERRORS for problems
        worth retrying (network, stall, HTTP 5xx, connection cut before the announced length) and DownloadError
        for those that are not (HTTP 4xx, past the deadline)."""
        start = _size_on_disk(self.part)
        self.check_deadline(start)
        headers = {"User-Agent": "varlite-downloader"}
        if start > 0:
            headers["Range"] = f"bytes={start}-"
        try:
            response = urllib.request.urlopen(urllib.request.Request(self.url, headers=headers), timeout=self.stall_s)
        except urllib.error.HTTPError as err:
            if err.code == 416 and start > 0:
                total = _total_from_content_range(err.headers.get("Content-Range"))
                if total is None or total == start:
                    return                # nothing past our bytes: the part file already holds the whole file
                self.part.unlink()
                raise http.client.HTTPException(f"the part file ({start} bytes) is longer than the file on the "
                                                f"server ({total} bytes); starting over") from err
            if err.code >= 500:
                raise                     # a server-side problem, often temporary: retried by the caller
            raise DownloadError(f"{self.url} answered HTTP {err.code} ({err.reason}). Check the URL; if it is "
                                f"right, the file may have moved: download it by hand and put it at "
                                f"{self.dest}.") from err
        with response:
            if response.status == 206:
                if _start_from_content_range(response.headers.get("Content-Range")) != start:
                    self.part.unlink()
                    raise http.client.HTTPException(f"asked for bytes from {start}, the server sent others; "
                                                    f"starting over")
                self.total = _total_from_content_range(response.headers.get("Content-Range"))
                mode = "ab"
            else:                         # 200: the whole file, whether or not we asked for a range
                start = 0
                length = response.headers.get("Content-Length")
                self.total = int(length) if length is not None else None
                mode = "wb"
            bar.reset(total=self.total)
            bar.update(start)
            done = start
            with open(self.part, mode) as f:
                while chunk := response.read1(self.chunk_size):    # whatever has arrived, at most chunk_size
                    f.write(chunk)
                    done += len(chunk)
                    bar.update(len(chunk))
                    self.check_deadline(done)
        if self.total is not None and done < self.total:
            raise http.client.IncompleteRead(b"", self.total - done)   # closed early: resume from `done`

    def check_deadline(self, done: int) -> None:
        """Raise DownloadError when the deadline has passed; ``done``: the bytes in the part file."""
        elapsed = time.monotonic() - self.start_time
        if elapsed > self.deadline():
            kept = f" The {done} bytes in {self.part} are kept: a rerun resumes from them." if done else ""
            rule = " (10 min + 2 s per MB: at least 0.5 MB/s on average)" if self.deadline_s is None else ""
            raise DownloadError(f"Stopped downloading {self.url} after {elapsed:.0f} s, past its deadline of "
                                f"{self.deadline():g} s{rule}. The connection is too slow or the server sends too "
                                f"little.{kept}\nRun again later, or download the file by hand from {self.url} and "
                                f"put it at {self.dest}.")

    def network_error(self, err: BaseException, failures: int) -> DownloadError:
        """The DownloadError raised when the network keeps failing, with what to do about it."""
        reason = err.reason if isinstance(err, urllib.error.URLError) else err
        if isinstance(reason, TimeoutError):
            reason = f"no byte for {self.stall_s:g} s, {failures} times in a row (a stalled server or connection)"
        kept = f" The {self.part.stat().st_size} bytes already in {self.part} are kept." if self.part.exists() else ""
        return DownloadError(f"Could not download {self.url}: {reason}.\n"
                             f"You seem to be offline, or the server cannot be reached or has stalled.{kept}\n"
                             f"Check your connection and run again (the download resumes where it stopped), or "
                             f"download the file by hand from {self.url} and put it at {self.dest}.")


def _md5(path: Path) -> str:
    """Hex md5 of a file, read in 1 MiB blocks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _size_on_disk(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _start_from_content_range(header: str | None) -> int | None:
    """First byte of ``Content-Range: bytes START-END/TOTAL``; None if absent or unparsable."""
    if header is None or not header.startswith("bytes ") or "-" not in header:
        return None
    start = header[len("bytes "):].split("-")[0]
    return int(start) if start.isdigit() else None


def _total_from_content_range(header: str | None) -> int | None:
    """TOTAL of ``Content-Range: bytes START-END/TOTAL`` or ``bytes */TOTAL``; None if absent or unknown (``*``)."""
    if header is None or "/" not in header:
        return None
    total = header.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None


if __name__ == "__main__":         # the worker process of hub_download
    sys.exit(_hub_worker(sys.argv[1]))
