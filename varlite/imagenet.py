"""The 1,000 ImageNet (ILSVRC-2012) class names, in label order: the classes of the official VAR models.

Label i of an official checkpoint is the i-th synset of ILSVRC-2012 sorted by WordNet id (n01440764 "tench" = 0,
n15075141 "toilet tissue" = 999). The names are each synset's first lemma, as the common
``imagenet_classes.txt`` lists them; the two pairs that share a lemma are told apart: 134 "crane (bird)" /
517 "crane (machine)", 638 "maillot" / 639 "maillot (tank suit)". The list ships as package data
(``varlite/data/imagenet_classes.json``).
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

NUM_CLASSES = 1000
CLASSES_FILE = Path(__file__).resolve().parent / "data" / "imagenet_classes.json"


@lru_cache(maxsize=1)
def class_names() -> tuple[str, ...]:
    """The 1,000 class names, index = label (a tuple: read once, never modified)."""
    names = json.loads(CLASSES_FILE.read_text(encoding="utf-8"))
    if len(names) != NUM_CLASSES:
        raise RuntimeError(f"{CLASSES_FILE} holds {len(names)} names; expected {NUM_CLASSES}. Reinstall varlite.")
    return tuple(names)
