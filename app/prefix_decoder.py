"""The decoding of prefix images for the pages, in one background thread, newest wish first."""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:       # app.traces imports this module; the names are for annotations only
    from app.loaders import LoadedModel
    from app.traces import GenerationRun

WISH_S = 1.5            # a wish for a decoded prefix lapses unless renewed within this


class Decoder:
    """Decodes, in one background thread, the prefix images that pages are showing (a large model's: seconds
    each). A page renews its wish on every redraw (``want``); the newest wish goes first, and a wish not renewed
    within WISH_S lapses (the student has moved on), so only what someone is looking at is decoded."""

    def __init__(self):
        self._wishes: dict[tuple[int, int], tuple[float, GenerationRun, int, LoadedModel]] = {}
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None

    def want(self, run: GenerationRun, si: int, model: LoadedModel) -> None:
        with self._lock:
            self._wishes[(id(run), si)] = (time.monotonic(), run, si, model)
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, daemon=True, name="varlite-decode")
                self._worker.start()

    def _work(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                fresh = {key: wish for key, wish in self._wishes.items()
                         if now - wish[0] <= WISH_S and wish[2] not in wish[1].decoded()}
                self._wishes = fresh
                if not fresh:
                    self._worker = None
                    return
                key = max(fresh, key=lambda k: fresh[k][0])
                _, run, si, model = self._wishes.pop(key)
            try:
                run.image(si, model)
            except Exception:      # noqa: BLE001 -- the page decodes it itself then, and shows the error
                pass
