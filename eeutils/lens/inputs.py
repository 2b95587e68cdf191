"""What the readout accepts, checked at the door: nothing is coerced silently.

Accepted `inputs`: a `str`; a `Doc`; a list (or tuple) of str / Doc; one list of token ids; a list of
token-id lists; a 1-D or 2-D integer tensor or NumPy array; a `Workload`. Token ids are Python or NumPy
integers (bools are not). Anything else raises a TypeError naming what was given and what is accepted;
a token id outside the vocabulary, or a text that is not valid Unicode (a lone surrogate), raises a
ValueError naming its document.
"""
from __future__ import annotations

import numbers

import numpy as np
import torch

from ..core.checks import check_integer
from ..workloads.types import Doc, Workload, surrogate_problem

ACCEPTED = ("a str, a list of str (or Doc), one list of token ids, a list of token-id lists (Python or NumPy "
            "integers), a 1-D or 2-D integer tensor or array, or a Workload")

# a hint for types people pass by mistake
_HINTS = {
    bytes: "decode it first: data.decode('utf-8')", bytearray: "decode it first: bytes(data).decode('utf-8')",
    dict: "pass its texts as a list, e.g. list(d.values())", set: "pass a list: a set has no order",
}


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _given(x) -> str:
    if x is None:
        return "None"
    if isinstance(x, torch.Tensor):
        return f"a {x.dim()}-D tensor of {x.dtype}"
    if isinstance(x, np.ndarray):
        return f"a {x.ndim}-D array of {x.dtype}"
    return f"a {type(x).__name__} ({x!r:.40})" if isinstance(x, (numbers.Number, str)) else f"a {type(x).__name__}"


def _refuse(x) -> TypeError:
    hint = next((h for t, h in _HINTS.items() if isinstance(x, t)), "")
    return TypeError(f"readout inputs of this type are not accepted: got {_given(x)}. Accepted: {ACCEPTED}."
                     + (f" For a {type(x).__name__}: {hint}." if hint else ""))


def _array_ids(a, doc: int | None) -> list | list[list[int]]:
    """Token ids from an integer tensor/array (1-D: one document, 2-D: one per row)."""
    where = "inputs" if doc is None else f"document {doc}"
    if isinstance(a, torch.Tensor):
        ok = not a.is_floating_point() and not a.is_complex() and a.dtype != torch.bool
    else:
        ok = a.dtype.kind in "iu"
    if not ok:
        raise TypeError(f"{where} is {_given(a)}; token ids must be integers (an integer dtype such as int64), "
                        "not floats or bools: convert them yourself if that is what you mean")
    if a.ndim not in (1, 2) or (doc is not None and a.ndim != 1):
        raise TypeError(f"{where} is {_given(a)}; a tensor or array of token ids must be 1-D (one document) "
                        "or 2-D (one document per row)")
    return a.tolist()


def _id_list(seq, doc: int) -> list[int]:
    """One document's token ids as Python ints; TypeError at the first id that is not an integer."""
    if isinstance(seq, (torch.Tensor, np.ndarray)):
        return _array_ids(seq, doc)
    for pos, t in enumerate(seq):
        if not _is_int(t):
            raise TypeError(f"document {doc}, position {pos}: token id {t!r} is a {type(t).__name__}; token ids "
                            "must be Python or NumPy integers (no floats, bools or strings)")
    return [int(t) for t in seq]


def as_documents(inputs) -> tuple[list, str | None]:
    """(documents, workload name): each document a str, a Doc or a list of int token ids."""
    name = None
    if isinstance(inputs, Workload):
        name, inputs = inputs.name, list(inputs.docs)
    if isinstance(inputs, (str, Doc)):
        return [inputs], name
    if isinstance(inputs, (torch.Tensor, np.ndarray)):
        ids = _array_ids(inputs, None)
        docs = [ids] if inputs.ndim == 1 else ids
    elif isinstance(inputs, (list, tuple)):
        if inputs and all(_is_int(x) for x in inputs):
            docs = [[int(x) for x in inputs]]  # one flat list of ids = one document
        else:
            docs = []
            for i, d in enumerate(inputs):
                if isinstance(d, (str, Doc)):
                    docs.append(d)
                elif isinstance(d, (list, tuple, torch.Tensor, np.ndarray)):
                    docs.append(_id_list(d, i))
                else:
                    raise TypeError(f"document {i} is {_given(d)}: each document must be a str, a Doc or a list "
                                    f"of token ids. Accepted inputs: {ACCEPTED}.")
    else:
        raise _refuse(inputs)
    if not docs:
        raise ValueError("no input: pass a text, a list of texts, token-id lists or a Workload with documents")
    _check_texts(docs)
    return docs, name


def _check_texts(docs) -> None:
    """ValueError naming the first document whose text is not valid Unicode (a lone surrogate)."""
    for i, d in enumerate(docs):
        text = d.text if isinstance(d, Doc) else d
        problem = surrogate_problem(text) if isinstance(text, str) else None
        if problem:
            raise ValueError(f"document {i} {problem}")


def check_token_ids(ids_list, vocab: int, model_name: str = "") -> None:
    """ValueError at the first token id outside [0, vocab), naming its document and position."""
    for d, ids in enumerate(ids_list):
        bad = [p for p, t in enumerate(ids) if not 0 <= t < vocab]
        if bad:
            of = f" of {model_name}" if model_name else ""
            raise ValueError(f"document {d}, position {bad[0]}: token id {ids[bad[0]]} is outside the vocabulary "
                             f"[0, {vocab}){of} ({len(bad)} such id(s) in this document); use ids from this "
                             "model's tokenizer")


def token_rows(input_ids, vocab: int | None, name: str = "input_ids") -> list[list[int]]:
    """Token ids for a forward pass: one sequence (a list of ints, a 1-D integer tensor/array) or several of
    one length (a list of such lists, a 2-D one), as Python ints in [0, vocab). Anything else (text, floats,
    bools, ragged or empty rows, an id outside the vocabulary) is a TypeError / ValueError naming `name`.
    vocab=None: the caller checks the range itself."""
    seq = isinstance(input_ids, (list, tuple))
    try:
        if isinstance(input_ids, (torch.Tensor, np.ndarray)):
            rows = _array_ids(input_ids, None)
            rows = [rows] if input_ids.ndim == 1 else rows
        elif seq and all(_is_int(x) for x in input_ids):
            rows = [[int(x) for x in input_ids]]
        elif seq and all(isinstance(r, (list, tuple, torch.Tensor, np.ndarray)) for r in input_ids):
            rows = [_id_list(r, i) for i, r in enumerate(input_ids)]
        else:
            raise TypeError(f"must be token ids: a list of ints, a list of such lists, or a 1-D or 2-D integer "
                            f"tensor/array; got {_given(input_ids)}")
    except TypeError as err:
        raise TypeError(f"{name}: {err}") from None
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError(f"{name} has no tokens: pass at least one token id per row")
    if len({len(r) for r in rows}) > 1:
        raise ValueError(f"{name} rows have different lengths {sorted({len(r) for r in rows})}; pad them or pass "
                         "one row at a time")
    try:
        if vocab is not None:
            check_token_ids(rows, vocab)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None
    return rows


def check_positive_int(name: str, value) -> int:
    """A positive Python or NumPy integer (no bools, no floats), else TypeError / ValueError naming it."""
    return check_integer(name, value, 1, integral_floats=False)
