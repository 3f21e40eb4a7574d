"""Uploaded weights files: kept in a private temporary folder of the server, named by their SHA-256.

``UploadStore`` keeps at most ``MAX_UPLOADS`` files and deletes the least recently stored first. A stored file is
loaded exactly like a file on disk (``app/loaders.py``: ``torch.load`` with ``weights_only=True`` and the strict
checks of ``varlite.pretrained`` / ``load_var_run``); messages name the file as it was uploaded, never its path on
the server, and never quote its bytes.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from pathlib import Path

import streamlit as st

MAX_WEIGHTS_UPLOAD_MB = 200        # per uploaded weights file, at most; the server's maxUploadSize may allow less
MAX_UPLOADS = 4                    # uploaded weights files kept on the server at once


def weights_upload_limit_mb() -> int:
    """The largest weights file an upload may be: the server's ``server.maxUploadSize`` (the project's Streamlit
    config sets 10 MB; ``--server.maxUploadSize 200`` raises it), at most ``MAX_WEIGHTS_UPLOAD_MB``."""
    return min(MAX_WEIGHTS_UPLOAD_MB, int(st.get_option("server.maxUploadSize")))


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
            raise UploadedFileError(f"{name} is {len(data) / 2**20:.1f} MB; weights uploads are limited to "
                                    f"{limit_mb} MB here. Larger files (training runs, the official files) are "
                                    f"loaded from the model folder: copy them there and give their names.")
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
    """The server's one ``UploadStore`` (a new private folder per server process)."""
    return UploadStore(Path(tempfile.mkdtemp(prefix="varlite-uploads-")))
