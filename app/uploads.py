"""Uploaded weights files: kept in a private temporary folder of the server, named by their SHA-256; and how the pages
show an uploaded file's name.

``UploadStore`` keeps at most ``MAX_UPLOADS`` files and deletes the least recently stored first. A stored file is
loaded exactly like a file on disk (``app/loaders.py``: ``torch.load`` with ``weights_only=True`` or safetensors, and
the strict checks before anything is built); messages name the file as it was uploaded (``literal``: as code, so
that markdown in a name is shown, not rendered), never its path on the server, and never quote its bytes.

The folder is ``varlite-uploads-<pid>-<random>`` in the system's temporary folder. It is deleted when the server
exits normally (Ctrl-C, a kill: ``atexit``); the folders of servers that ended without cleaning up (killed hard, the
machine switched off) are deleted when the next server starts (``remove_stale_upload_folders``, run when this module
is first imported, i.e. on the server's first page view).
"""
from __future__ import annotations

import atexit
import hashlib
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

import streamlit as st

MAX_WEIGHTS_UPLOAD_MB = 200        # per uploaded weights file, at most; the server's maxUploadSize may allow less
MAX_UPLOADS = 4                    # uploaded weights files kept on the server at once
FOLDER_PREFIX = "varlite-uploads-"
LEGACY_FOLDER_AGE_S = 24 * 3600    # folders named without a pid (older varlite) are stale after a day untouched
MAX_NAME_CHARS = 120               # an uploaded file's name is shown cut to this many characters
EXPORT_COMMAND = "python -m varlite export-run RUN --out model.safetensors"


def weights_upload_limit_mb() -> int:
    """The largest weights file an upload may be: the server's ``server.maxUploadSize`` (the project's Streamlit
    config sets 10 MB; ``--server.maxUploadSize 50`` raises it), at most ``MAX_WEIGHTS_UPLOAD_MB``."""
    return min(MAX_WEIGHTS_UPLOAD_MB, int(st.get_option("server.maxUploadSize")))


def limit_text(limit_mb: int) -> str:
    """The upload limit and how to get under it: what the Models page says beside the uploader, and in a refusal."""
    return (f"Weights files up to **{limit_mb} MB** each. A run's `checkpoint.pt` also holds the optimizer's state, "
            f"so it is several times larger than the model: export the weights alone with `{EXPORT_COMMAND}` "
            f"(the tokenizer and the transformer in one file) and upload that. The limit is the server's "
            f"`server.maxUploadSize`: a teacher raises it when starting the server, e.g. with "
            f"`--server.maxUploadSize 50` (MB) after the `streamlit run` command.")


def literal(name: str) -> str:
    """An uploaded file's name as markdown that shows it exactly: a code span (fenced with more backticks than any
    run in the name), control characters as spaces, cut to ``MAX_NAME_CHARS``. A name such as
    ``[click](http://...)`` or ``**big**`` is shown as typed, never rendered as a link or as bold."""
    text = re.sub(r"[\x00-\x1f\x7f]", " ", str(name))[:MAX_NAME_CHARS] or "(no name)"
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text[0] in "` " or text[-1] in "` " else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def model_name(file_name: str) -> str:
    """The name an uploaded model goes by on every page (picker, titles, captions, download names): the file's stem
    in letters, digits, '.', '-' and underscores inside words, anything else as '-' (markdown has nothing to
    render in it), at most 60 characters; 'upload' when nothing is left."""
    stem = Path(re.sub(r"[\\/]", "-", str(file_name))).stem
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem)
    name = re.sub(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])", "-", name)
    return name.strip("-.")[:60] or "upload"


def without_upload_folder(text: str) -> str:
    """``text`` without the server's upload folders (a stored file's path becomes its name)."""
    return re.sub(re.escape(os.path.join(tempfile.gettempdir(), FOLDER_PREFIX)) + r"[^/\\\s]*[/\\]", "", text)


class UploadedFileError(ValueError):
    """An uploaded weights file that cannot be used; the message names the upload, says why and what to do."""


class UploadStore:
    """Uploaded weights files of this server, in a private temporary folder, each named by the SHA-256 of its
    bytes; at most ``max_files`` kept, the least recently stored deleted first. (A model loaded from a deleted file
    keeps working: its tensors are in memory or mapped from the still-open file.)"""

    def __init__(self, folder: Path, max_files: int = MAX_UPLOADS):
        self.folder, self.max_files = folder, max_files
        self.names: dict[str, str] = {}          # sha256 -> the name the file was uploaded under
        self._lock = threading.Lock()

    def put(self, data: bytes, name: str) -> str:
        """Store the bytes (if new) and return their SHA-256; refuse files over ``weights_upload_limit_mb()``."""
        limit_mb = weights_upload_limit_mb()
        if len(data) > limit_mb * 2**20:
            raise UploadedFileError(f"{literal(name)} is {len(data) / 2**20:.1f} MB; weights uploads are limited to "
                                    f"{limit_mb} MB here. " + limit_text(limit_mb))
        sha = hashlib.sha256(data).hexdigest()
        with self._lock:
            path = self.folder / f"{sha}.pth"
            if not path.exists():
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(data)
                os.replace(tmp, path)
            os.utime(path)
            self.names[sha] = name
            for old in sorted(self.folder.glob("*.pth"), key=lambda p: p.stat().st_mtime_ns)[:-self.max_files]:
                old.unlink(missing_ok=True)
                self.names.pop(old.stem, None)
        return sha

    def path(self, sha: str) -> Path:
        """The stored file of a hash; UploadedFileError when it is no longer kept (or the hash is malformed)."""
        path = self.folder / f"{sha}.pth"
        if not re.fullmatch(r"[0-9a-f]{64}", sha) or not path.is_file():
            raise UploadedFileError(f"the uploaded file is no longer on the server (it keeps the last "
                                    f"{self.max_files} uploads): upload it again on the Models page")
        return path

    def name(self, sha: str) -> str:
        return self.names.get(sha, "the uploaded file")


@st.cache_resource
def upload_store() -> UploadStore:
    """The server's one ``UploadStore``: a new private folder named after this process, deleted at exit."""
    folder = Path(tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-"))
    atexit.register(shutil.rmtree, folder, True)
    return UploadStore(folder)


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (POSIX: signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True               # it exists, as another user's process
    return True


def remove_stale_upload_folders(temp_folder: Path | None = None) -> list[Path]:
    """Delete this user's upload folders that no running server owns: the process named in the folder's name is
    gone, or (a name without a pid, from an older varlite) it was not touched for a day. Returns the folders
    deleted. POSIX only: elsewhere a folder's owner cannot be checked safely, and folders are left alone."""
    if os.name != "posix":
        return []
    removed = []
    for folder in Path(temp_folder or tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*"):
        try:
            if folder.is_symlink() or not folder.is_dir() or folder.stat().st_uid != os.getuid():
                continue
            pid = re.fullmatch(rf"{FOLDER_PREFIX}(\d+)-.*", folder.name)
            stale = (not _process_alive(int(pid.group(1))) if pid
                     else time.time() - folder.stat().st_mtime > LEGACY_FOLDER_AGE_S)
        except OSError:
            continue
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


remove_stale_upload_folders()      # once per server process, when the app first imports this module
