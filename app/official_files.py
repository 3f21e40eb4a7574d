"""The official checkpoints in the cache folder: which are there, and which of those are damaged or not official.

The files are found by ``varlite.pretrained.official_path`` and checked by ``varlite.pretrained.verify_official``
(tensor names and shapes only, tensors memory-mapped; messages never quote the file).
"""
from __future__ import annotations

import streamlit as st

from varlite import pretrained

OFFICIAL_DEPTHS = tuple(int(d) for d in pretrained.official_depths())   # d16 ... d30 (256 px), d36-s (512 px)


def official_in_cache() -> list[int]:
    """Depths whose VAR file and the shared VAE file are both in the cache folder (whether or not they load)."""
    if not pretrained.official_path("vae").exists():
        return []
    return [d for d in OFFICIAL_DEPTHS if pretrained.official_path(f"d{d}").exists()]


def official_file_problems() -> dict[str, str]:
    """{official name: what is wrong} for the files in the cache that are damaged or not the official files."""
    problems = {}
    for name in pretrained.OFFICIAL_FILES:
        path = pretrained.official_path(name)
        if path.is_file():
            stat = path.stat()
            problem = _verify_official(name, str(path), stat.st_size, stat.st_mtime_ns)
            if problem:
                problems[name] = problem
    return problems


@st.cache_data(show_spinner="Checking the cached files...", max_entries=16)
def _verify_official(name: str, path: str, size: int, mtime_ns: int) -> str:
    """'' when the file is the official one, else why not (cached per file version: path, size, mtime)."""
    try:
        pretrained.verify_official(name)
    except pretrained.CheckpointError as err:
        return str(err)
    return ""


def files_named_in(err: BaseException) -> list[str]:
    """The official files (by name: vae, d16, ...) whose path appears in an error message."""
    text = str(err)
    return [name for name in pretrained.OFFICIAL_FILES if str(pretrained.official_path(name)) in text]
