"""What travels between the grader and the grading sandbox's worker (``sandbox``): messages on a pipe, each its
length then its bytes, and the learner's answers in a form ``torch.load(weights_only=True)`` reads back -- tagged
lists of tensors, numbers and strings -- so nothing a learner returns can run code in the grader. What cannot travel
(an object of the learner's own class, a generator ...) comes back as a ``ForeignValue`` named after its type.
"""
from __future__ import annotations

import io
import os
import struct

import numpy as np
import torch

_HEADER = struct.Struct("!Q")                # a message: its length, then its bytes


class ForeignValue:
    """Something a learner's function returned that cannot travel back (an object of its own class, a generator
    ...): the grader sees an instance of a subclass named after its type."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def encode_value(x, depth: int = 0):
    """A learner's answer as tagged lists of tensors, numbers and strings (``torch.load(weights_only=True)`` reads
    them back); anything else is a ``foreign`` value with its type name."""
    if depth > 32:
        return ["foreign", "nested too deep", ""]
    if isinstance(x, torch.Tensor):
        if x.layout == torch.strided and x.device.type == "cpu":
            return ["tensor", x.detach().clone()]
    elif isinstance(x, np.ndarray):
        if x.dtype.kind in "biufc":
            try:
                return ["ndarray", str(x.dtype), torch.from_numpy(np.ascontiguousarray(x))]
            except TypeError:         # a dtype torch does not have
                pass
    elif isinstance(x, np.generic) and x.dtype.kind in "biuf":
        return ["np", x.dtype.str, x.item()]
    elif x is None or isinstance(x, (bool, int, float, str)):
        return ["value", x]
    elif isinstance(x, complex):
        return ["complex", x.real, x.imag]
    elif isinstance(x, (list, tuple)):          # namedtuples (torch.return_types) travel as tuples
        return ["list" if isinstance(x, list) else "tuple", [encode_value(v, depth + 1) for v in x]]
    elif isinstance(x, dict):
        return ["dict", [[encode_value(k, depth + 1), encode_value(v, depth + 1)] for k, v in x.items()]]
    try:
        text = repr(x)[:200]
    except Exception:
        text = "?"
    return ["foreign", type(x).__name__[:60], text]


def decode_value(x):
    """The value ``encode_value`` described: tensors, arrays, numbers, strings and containers as they were, a foreign
    value as a ``ForeignValue``."""
    kind = x[0]
    if kind == "tensor":
        return x[1]
    if kind == "ndarray":
        return x[2].numpy().astype(np.dtype(x[1]), copy=False)
    if kind == "np":
        return np.dtype(x[1]).type(x[2])
    if kind == "value":
        return x[1]
    if kind == "complex":
        return complex(x[1], x[2])
    if kind in ("list", "tuple"):
        items = [decode_value(v) for v in x[1]]
        return items if kind == "list" else tuple(items)
    if kind == "dict":
        return {decode_value(k): decode_value(v) for k, v in x[1]}
    name = x[1] if x[1].isidentifier() else "ForeignValue"
    return type(name, (ForeignValue,), {})(x[2])       # a subclass named after the learner's type, for messages


def send_message(fd: int, data: bytes) -> None:
    """Write one message: its length (8 bytes, big-endian), then its bytes."""
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def receive_message(fd: int) -> bytes | None:
    """One message, or None when the other side is gone."""
    def exactly(n: int) -> bytes | None:
        chunks, left = [], n
        while left:
            chunk = os.read(fd, min(left, 2 ** 20))
            if not chunk:
                return None
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    header = exactly(_HEADER.size)
    return None if header is None else exactly(_HEADER.unpack(header)[0])


def answer_to_bytes(answer) -> bytes:
    """An answer (dicts, lists and ``encode_value``'s parts) as the bytes of one message."""
    buffer = io.BytesIO()
    torch.save(answer, buffer)
    return buffer.getvalue()


def answer_from_bytes(data: bytes):
    """An answer back from its bytes, with ``torch.load(weights_only=True)``: it rebuilds tensors, numbers, strings
    and containers only, so nothing in a message can run code in the grader."""
    return torch.load(io.BytesIO(data), weights_only=True)
