"""The ImageNet class names shipped for the official models: 1,000 distinct names in ILSVRC-2012 label order."""
from __future__ import annotations

import json

from varlite import imagenet


def test_one_thousand_distinct_names():
    names = imagenet.class_names()
    assert len(names) == imagenet.NUM_CLASSES == 1000
    assert len(set(names)) == 1000
    assert all(isinstance(n, str) and n == n.strip() and n for n in names)


def test_label_order_at_known_indices():
    names = imagenet.class_names()
    # the classes of the official VAR demo (207, 360, 387, 974, 88, 979, 417, 279) and both ends of the list
    expected = {0: "tench", 1: "goldfish", 88: "macaw", 207: "golden retriever", 279: "Arctic fox", 281: "tabby",
                360: "otter", 387: "lesser panda", 417: "balloon", 974: "geyser", 979: "valley",
                999: "toilet tissue", 134: "crane (bird)", 517: "crane (machine)"}
    assert {i: names[i] for i in expected} == expected


def test_the_file_is_package_data():
    assert imagenet.CLASSES_FILE.is_file()
    assert json.loads(imagenet.CLASSES_FILE.read_text()) == list(imagenet.class_names())
