"""A resumable, atomic HTTP downloader (standard library only) and the varlite cache folder."""
from __future__ import annotations

import hashlib
import http.client
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

RETRY_PAUSE_S = 1.0          # pause before retry k is k * RETRY_PAUSE_S seconds
PROGRESS_REDRAW_S = 0.1      # the progress bar is redrawn at most this often

# What a failing network raises (host unreachable, HTTP 5xx, timeouts, dropped connections), as opposed to local
# errors such as a full disk, which are not retried.
NETWORK_ERRORS = (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError, http.client.HTTPException)


class DownloadError(RuntimeError):
    """A download failed: host unreachable, HTTP error, or a file that is not the expected one."""


def varlite_home() -> Path:
    """The folder for downloaded data: ``$VARLITE_HOME`` if set, else ``~/.cache/varlite``; created on demand."""
    home = os.environ.get("VARLITE_HOME")
    path = Path(home).expanduser() if home else Path.home() / ".cache" / "varlite"
    path.mkdir(parents=True, exist_ok=True)
    return path


def download_file(url: str, dest: str | os.PathLike, *, expected_size: int | None = None, md5: str | None = None,
                  sha256: str | None = None, progress: bool = True, timeout: float = 30.0, retries: int = 3,
                  chunk_size: int = 1 << 20) -> Path:
    """Download ``url`` to ``dest`` and return ``dest`` as a Path.

    Rules:
    - If ``dest`` exists with the expected size and checksums (those given), nothing is fetched. A ``dest`` is only
      ever created by an atomic rename of a finished, checked download, so with nothing to check it is trusted.
    - Bytes are streamed into ``dest + ".part"``. An existing part file is resumed with ``Range: bytes=N-``;
      a server that answers 200 instead of 206 sends the whole file, so the part file restarts from zero.
    - A dropped connection or a network error is retried after a short pause, resuming from the bytes on disk.
      ``retries`` is the number of retries in a row that brought no new bytes before giving up.
    - The finished file must have ``expected_size`` bytes (if given), as many bytes as the server announced, and
      the given md5 / sha256. A mismatch deletes the part file and raises DownloadError.
    - Only then is the part file renamed onto ``dest`` (``os.replace``), so ``dest`` never exists half-written.
    """
    dest = Path(dest)
    if dest.exists() and _is_expected_file(dest, expected_size, md5, sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    bar = _ProgressBar(dest.name, enabled=progress)
    failures_in_a_row = 0
    try:
        while True:
            size_before = _size_on_disk(part)
            try:
                _fetch_once(url, dest, part, expected_size=expected_size, timeout=timeout, chunk_size=chunk_size,
                            bar=bar)
                break
            except NETWORK_ERRORS as err:
                if _size_on_disk(part) > size_before:
                    failures_in_a_row = 0
                failures_in_a_row += 1
                if failures_in_a_row > retries:
                    raise _network_error(url, dest, part, err) from err
                time.sleep(RETRY_PAUSE_S * failures_in_a_row)
    finally:
        bar.close()                   # end the progress line, also when an error is on its way
    _check_finished_part(url, dest, part, expected_size, md5, sha256)
    os.replace(part, dest)
    return dest


def _fetch_once(url: str, dest: Path, part: Path, *, expected_size: int | None, timeout: float, chunk_size: int,
                bar: _ProgressBar) -> None:
    """One HTTP request: append the missing bytes to ``part``. Returns when the server's file is complete.

    Raises one of NETWORK_ERRORS for problems worth retrying (network, HTTP 5xx, connection cut before the
    announced length) and DownloadError for those that are not (HTTP 4xx, a file of the wrong size).
    """
    start = _size_on_disk(part)
    if expected_size is not None and start > expected_size:
        part.unlink()                     # longer than the file we want: it cannot be a prefix of it
        start = 0
    if expected_size is not None and start == expected_size:
        return                            # already complete; the checksums are checked by the caller
    headers = {"User-Agent": "varlite-downloader"}
    if start > 0:
        headers["Range"] = f"bytes={start}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start > 0:
            total = _total_from_content_range(err.headers.get("Content-Range"))
            if total is None or total == start:
                return                    # nothing past our bytes: the part file already holds the whole file
            part.unlink()
            raise http.client.HTTPException(f"the part file ({start} bytes) is longer than the file on the server "
                                            f"({total} bytes); starting over") from err
        if err.code >= 500:
            raise                         # a server-side problem, often temporary: retried by the caller
        raise DownloadError(f"{url} answered HTTP {err.code} ({err.reason}). Check the URL; if it is right, the "
                            f"file may have moved: download it by hand and put it at {dest}.") from err

    with response:
        if response.status == 206:
            range_start = _start_from_content_range(response.headers.get("Content-Range"))
            if range_start != start:
                part.unlink()
                raise http.client.HTTPException(f"asked for bytes from {start}, the server sent bytes from "
                                                f"{range_start}; starting over")
            total = _total_from_content_range(response.headers.get("Content-Range"))
            mode = "ab"
        else:                             # 200: the whole file, whether or not we asked for a range
            start = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None else None
            mode = "wb"
        if expected_size is not None and total is not None and total != expected_size:
            part.unlink(missing_ok=True)
            raise DownloadError(f"{url} is {total} bytes on the server, expected {expected_size} bytes. The file on "
                                f"the server is not the one expected; check the URL or download it by hand.")
        bar.start(done=start, total=total)
        done = start
        with open(part, mode) as f:
            while chunk := response.read(chunk_size):
                f.write(chunk)
                done += len(chunk)
                bar.update(done)
    if total is not None and done < total:
        raise http.client.IncompleteRead(b"", total - done)   # the connection was closed early: resume from `done`


def _check_finished_part(url: str, dest: Path, part: Path, expected_size: int | None, md5: str | None,
                         sha256: str | None) -> None:
    """Raise DownloadError (and delete the part file) unless it has the expected size and checksums."""
    size = part.stat().st_size
    if expected_size is not None and size != expected_size:
        part.unlink()
        raise DownloadError(f"the file downloaded from {url} has {size} bytes, expected {expected_size}. The part "
                            f"file was deleted; run again, or download it by hand from {url} and put it at {dest}.")
    for algorithm, expected in (("md5", md5), ("sha256", sha256)):
        if expected is None:
            continue
        got = _file_digest(part, algorithm)
        if got != expected.lower():
            part.unlink()
            raise DownloadError(f"{algorithm} mismatch for the file downloaded from {url}: expected {expected}, got "
                                f"{got}. The download is corrupt or the file on the server changed. The part file "
                                f"was deleted; run again, or download it by hand from {url} and put it at {dest}.")


def _is_expected_file(path: Path, expected_size: int | None, md5: str | None, sha256: str | None) -> bool:
    """True if ``path`` has the expected size and checksums (only those that are given)."""
    if expected_size is not None and path.stat().st_size != expected_size:
        return False
    if md5 is not None and _file_digest(path, "md5") != md5.lower():
        return False
    return sha256 is None or _file_digest(path, "sha256") == sha256.lower()


def _file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
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


def _network_error(url: str, dest: Path, part: Path, err: BaseException) -> DownloadError:
    """The DownloadError raised when the network keeps failing, with what to do about it."""
    reason = err.reason if isinstance(err, urllib.error.URLError) else err
    resume = f" The {part.stat().st_size} bytes already in {part} are kept." if part.exists() else ""
    return DownloadError(f"Could not download {url}: {reason}.\n"
                         f"You seem to be offline, or the server cannot be reached.{resume}\n"
                         f"Check your connection and run again (the download resumes where it stopped), or download "
                         f"the file by hand from {url} and put it at {dest}.")


class _ProgressBar:
    """One line on stderr, redrawn in place with ``\\r`` at most every PROGRESS_REDRAW_S seconds:
    ``name  done/total MB  percent  [####....]  speed MB/s  ETA m:ss``. Speed counts this session's bytes only."""

    def __init__(self, name: str, *, enabled: bool):
        self.name = name
        self.enabled = enabled
        self.total: int | None = None
        self.done = 0
        self.session_start_done: int | None = None     # bytes on disk when this call's first request began
        self.session_start_time = time.monotonic()
        self.last_draw = 0.0
        self.drawn = False

    def start(self, *, done: int, total: int | None) -> None:
        """A new request begins at byte ``done`` of ``total`` (None if unknown)."""
        if self.session_start_done is None:
            self.session_start_done = done
            self.session_start_time = time.monotonic()
        self.total = total
        self.update(done)

    def update(self, done: int) -> None:
        self.done = done
        if self.enabled and time.monotonic() - self.last_draw >= PROGRESS_REDRAW_S:
            self._draw()

    def close(self) -> None:
        """Draw the final state and end the line."""
        if self.enabled and self.drawn:
            self._draw()
            sys.stderr.write("\n")
            sys.stderr.flush()

    def _draw(self) -> None:
        now = time.monotonic()
        elapsed = max(now - self.session_start_time, 1e-6)
        speed = (self.done - (self.session_start_done or 0)) / elapsed   # bytes per second
        line = f"{self.name}  {self.done / 1e6:.1f}"
        if self.total:
            fraction = min(self.done / self.total, 1.0)
            filled = int(20 * fraction)
            line += f"/{self.total / 1e6:.1f} MB  {100 * fraction:3.0f}%  [{'#' * filled}{'.' * (20 - filled)}]"
        else:
            line += " MB"
        line += f"  {speed / 1e6:.1f} MB/s"
        if self.total and speed > 0:
            eta_s = int((self.total - self.done) / speed)
            line += f"  ETA {eta_s // 60}:{eta_s % 60:02d}"
        sys.stderr.write("\r" + line.ljust(78))
        sys.stderr.flush()
        self.last_draw = now
        self.drawn = True
