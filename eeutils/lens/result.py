"""The readout's data object: per-token, per-layer statistics, saved and loaded with metadata.

Layer indexing: layer 0 is the residual stream entering the first block (the
embeddings, after any scaling or position embeddings the model adds), layer l
is the output of block l, layer L is the last block's output. Every statistic
is an array of shape [n_tokens, L + 1]; tokens of all documents are
concatenated and located by `doc` and `position`. The statistics at position t
describe the prediction of token t + 1.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.checks import check_path
from ..core.io import atomic_write
from .files import ReadoutFileError, file_error, check_arrays, read_arrays  # noqa: F401  (ReadoutFileError: re-exported)
from .statistics import REGISTRY, STATISTICS  # noqa: F401  (STATISTICS: re-exported)


@dataclass
class Readout:
    """Per-token, per-layer early-exit statistics for one model on one workload."""

    stats: dict[str, np.ndarray]
    topk: np.ndarray  # [n_tokens, L + 1, k] int32, ids sorted by decreasing logit
    doc: np.ndarray  # [n_tokens] int32
    position: np.ndarray  # [n_tokens] int32
    token: np.ndarray  # [n_tokens] int64, the input token at this position
    target: np.ndarray  # [n_tokens] int64, the next token, -1 at a document's last position
    answer: np.ndarray  # [n_tokens] bool, True where the next token belongs to a reference answer
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.doc)
        for name, arr in self.stats.items():
            if arr.ndim != 2 or arr.shape[0] != n:
                raise ValueError(f"statistic {name!r} has shape {arr.shape}, expected [{n}, n_layers + 1]")
        for name in ("position", "token", "target", "answer"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries, expected {n}")

    # ---- shape -------------------------------------------------------------
    @property
    def n_tokens(self) -> int:
        return int(len(self.doc))

    @property
    def n_layers(self) -> int:
        """L, the number of blocks; layers run 0..L."""
        return int(self.stats["top1"].shape[1] - 1)

    @property
    def layers(self) -> np.ndarray:
        return np.arange(self.n_layers + 1)

    @property
    def n_docs(self) -> int:
        return int(len(np.unique(self.doc)))

    @property
    def k(self) -> int:
        return int(self.topk.shape[2])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.stats[name]

    @property
    def final_top1(self) -> np.ndarray:
        return self.stats["top1"][:, -1]

    @property
    def has_target(self) -> np.ndarray:
        return self.target >= 0

    # ---- selection ---------------------------------------------------------
    def select(self, mask_or_index) -> "Readout":
        """A readout restricted to some tokens (boolean mask or integer index)."""
        idx = np.asarray(mask_or_index)
        return Readout(
            stats={k: v[idx] for k, v in self.stats.items()},
            topk=self.topk[idx], doc=self.doc[idx], position=self.position[idx],
            token=self.token[idx], target=self.target[idx], answer=self.answer[idx],
            meta=dict(self.meta),
        )

    def select_docs(self, docs) -> "Readout":
        """Tokens of the given documents, in the order given (repeats allowed, as in a bootstrap).

        Repeated documents get fresh document numbers so per-document grouping stays valid.
        """
        docs = _doc_ids(docs, self.doc)
        order = np.argsort(self.doc, kind="stable")
        sorted_doc = self.doc[order]
        starts = np.searchsorted(sorted_doc, docs, side="left")
        ends = np.searchsorted(sorted_doc, docs, side="right")
        parts = [order[s:e] for s, e in zip(starts, ends)]
        idx = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        out = self.select(idx)
        out.doc = np.repeat(np.arange(len(docs), dtype=np.int32), [len(p) for p in parts])
        return out

    # ---- conversion --------------------------------------------------------
    def to_frame(self, layers=None, columns=None) -> pd.DataFrame:
        """Tidy frame: one row per (doc, position, layer), one column per statistic."""
        layer_idx = self.layers if layers is None else np.asarray(layers)
        cols = list(self.stats) if columns is None else list(columns)
        n, m = self.n_tokens, len(layer_idx)
        data = {
            "doc": np.repeat(self.doc, m),
            "position": np.repeat(self.position, m),
            "layer": np.tile(layer_idx, n),
            "rel_depth": np.tile(layer_idx / self.n_layers, n),
            "token": np.repeat(self.token, m),
            "target": np.repeat(self.target, m),
            "answer": np.repeat(self.answer, m),
        }
        for c in cols:
            data[c] = self.stats[c][:, layer_idx].reshape(-1)
        frame = pd.DataFrame(data)
        frame["model"] = self.meta.get("model", "")
        return frame

    def layer_means(self, columns=None) -> pd.DataFrame:
        """Mean of each statistic per layer over tokens (NaN-aware): one row per layer. Token ids (registry
        entries with averaged=False: top1) are left out."""
        cols = [c for c in (columns or self.stats) if c not in REGISTRY or REGISTRY[c].averaged]
        rows = {c: np.nanmean(self.stats[c].astype(np.float64), axis=0) for c in cols}
        frame = pd.DataFrame(rows)
        frame.insert(0, "layer", self.layers)
        frame.insert(1, "rel_depth", self.layers / self.n_layers)
        frame["model"] = self.meta.get("model", "")
        return frame

    # ---- persistence -------------------------------------------------------
    def save(self, path) -> Path:
        """Write one .npz (arrays + JSON metadata + a checksum of both) atomically; ".npz" is appended unless
        the name ends with it (so "run.2024.01" and "run.2024.02" stay two files; `load` takes either name).
        Returns the path written. An existing folder is refused (name a file inside it); a write that fails (a
        full disk, a read-only folder) raises OSError naming the file, and leaves an earlier file of that name and
        no temporary file behind."""
        path = check_path("path", path)
        for p in (Path(path), npz_path(path)):
            if p.is_dir():
                raise IsADirectoryError(f"cannot save a readout to {p}: it is an existing folder; pass a file "
                                        f"name, e.g. {p / 'readout.npz'}")
        path = npz_path(path)
        arrays = {f"stat__{k}": v for k, v in self.stats.items()}
        arrays.update(topk=self.topk, doc=self.doc, position=self.position, token=self.token,
                      target=self.target, answer=self.answer,
                      meta=np.frombuffer(json.dumps(self.meta, default=str).encode(), dtype=np.uint8))
        arrays[CHECKSUM] = np.frombuffer(json.dumps(
            {"arrays": sorted(arrays), "sha256": arrays_digest(arrays)}).encode(), dtype=np.uint8)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: numpy adds no ".npz" to the temporary name
                np.savez_compressed(f, **arrays)
        try:
            return atomic_write(path, write)
        except OSError as err:
            raise OSError(err.errno, f"cannot save the readout to {path} ({err.strerror or err}); nothing was "
                                     "written there: free some space or pick a folder you can write to") from err

    @classmethod
    def load(cls, path) -> "Readout":
        """A readout saved by `save`, under the name given to `save` (with or without ".npz"), checked first
        (`eeutils.lens.files`, then the checksum `save` wrote): a damaged or tampered file, or one with an
        array removed, raises ReadoutFileError (a ValueError) naming it; a missing one FileNotFoundError."""
        path = _existing(check_path("path", path))
        arrays = read_arrays(path)
        meta = check_arrays(arrays, path)
        verify_checksum(arrays, path)
        stats = {k[len("stat__"):]: v for k, v in arrays.items() if k.startswith("stat__")}
        return cls(stats=stats, topk=arrays["topk"], doc=arrays["doc"], position=arrays["position"],
                   token=arrays["token"], target=arrays["target"], answer=arrays["answer"], meta=meta)

    @classmethod
    def concat(cls, parts: list["Readout"]) -> "Readout":
        """Concatenate readouts of the same model; documents are renumbered consecutively."""
        if parts is not None and not isinstance(parts, (list, tuple)):
            raise TypeError(f"parts must be a list of Readouts, got {type(parts).__name__}")
        if not parts:
            raise ValueError("nothing to concatenate")
        bad = next((i for i, p in enumerate(parts) if not isinstance(p, Readout)), None)
        if bad is not None:
            raise TypeError(f"parts[{bad}] is a {type(parts[bad]).__name__}, not a Readout")
        _check_same_model(parts)
        docs, offset = [], 0
        for p in parts:
            _, inv = np.unique(p.doc, return_inverse=True)
            docs.append(inv.astype(np.int32) + offset)
            offset += int(inv.max()) + 1 if len(inv) else 0
        return cls(
            stats={k: np.concatenate([p.stats[k] for p in parts]) for k in parts[0].stats},
            topk=np.concatenate([p.topk for p in parts]), doc=np.concatenate(docs),
            position=np.concatenate([p.position for p in parts]),
            token=np.concatenate([p.token for p in parts]),
            target=np.concatenate([p.target for p in parts]),
            answer=np.concatenate([p.answer for p in parts]), meta=dict(parts[0].meta),
        )

    def __repr__(self) -> str:
        return (f"Readout(model={self.meta.get('model')!r}, docs={self.n_docs}, tokens={self.n_tokens}, "
                f"layers=0..{self.n_layers}, k={self.k})")


CHECKSUM = "checksum"  # JSON {"arrays": names saved, "sha256": digest of every other array}


def npz_path(path) -> Path:
    """The file `Readout.save(path)` writes: ".npz" appended unless the name already ends with it."""
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def _existing(path) -> Path:
    """The file a readout saved as `path` lives in: `npz_path(path)`, else `path` itself if it exists."""
    path = Path(path)
    for p in (npz_path(path), path):
        if p.exists():
            return p
    also = "" if npz_path(path) == path else f" (nor at {npz_path(path)})"
    raise FileNotFoundError(f"no readout file at {path}{also}")


def arrays_digest(arrays: dict) -> str:
    """sha256 over every array but the checksum: name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(k for k in arrays if k != CHECKSUM):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def verify_checksum(arrays: dict, path: Path) -> None:
    """ReadoutFileError unless the arrays are exactly those `save` wrote (no array removed, added or edited)."""
    if CHECKSUM not in arrays:
        raise file_error(path, "it has no checksum array (written by another tool or an older eeutils), so "
                          "edits since it was saved cannot be ruled out")
    try:
        record = json.loads(arrays[CHECKSUM].tobytes().decode("utf-8"))
        names, digest = list(record["arrays"]), str(record["sha256"])
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise file_error(path, f"its checksum record is unreadable ({err})") from err
    missing = sorted(set(names) - set(arrays))
    extra = sorted(set(arrays) - set(names) - {CHECKSUM})
    if missing or extra:
        raise file_error(path, f"its arrays differ from those saved (missing: {missing or 'none'}, added: "
                          f"{extra or 'none'})")
    if arrays_digest(arrays) != digest:
        raise file_error(path, "its arrays do not match the checksum written when it was saved (edited after saving)")


def _doc_ids(docs, doc: np.ndarray) -> np.ndarray:
    """`docs` as an integer array of document ids present in `doc`, else ValueError naming the valid ones."""
    arr = np.asarray(docs)
    if arr.size and arr.dtype.kind not in "iu":
        raise TypeError(f"docs must be integer document ids, got an array of {arr.dtype}")
    arr = arr.astype(np.int64).reshape(-1)
    present = np.unique(doc)
    bad = arr[~np.isin(arr, present)]
    if bad.size:
        valid = (f"0..{present[-1]}" if len(present) and np.array_equal(present, np.arange(len(present)))
                 else f"{present.tolist()[:20]}")
        raise ValueError(f"select_docs: document id(s) {bad[:5].tolist()} are not in this readout; valid ids are "
                         f"{valid if len(present) else 'none (the readout is empty)'}")
    return arr


def _check_same_model(parts) -> None:
    """ValueError unless every readout comes from the same model (name, revision), layer count and k."""
    def ident(p):
        return (p.meta.get("model"), p.meta.get("revision"), p.n_layers, p.k, tuple(sorted(p.stats)))
    first = ident(parts[0])
    for i, p in enumerate(parts[1:], 1):
        if ident(p) != first:
            what = ["model", "revision", "layer count", "k", "statistics"]
            diff = [f"{w} {a!r} vs {b!r}" for w, a, b in zip(what, first, ident(p)) if a != b]
            raise ValueError(f"Readout.concat: readout {i} differs from readout 0 ({'; '.join(diff)}); "
                             "concatenate readouts of one model only")
