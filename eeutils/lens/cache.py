"""Cache keys of readouts: one content-addressed key for the benchmark's and the notebooks' readout caches.

The key digests everything that changes a number in a readout: the model's weights (the sha256 of its
weight, config and tokenizer files; for a hub id not in the local cache, its name and revision), the
documents' content, the readout settings (`KeySettings`: tokens per document, k, dtype, batch size, chunk
size, device) and, for any lens but the logit lens, the lens' name and digest. A model rebuilt or fine-tuned in
place therefore never reuses a stale readout.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import _version
from ..arch.names import weights_folder
from ..core.keys import cache_key, weights_digest
from ..workloads.types import Workload, docs_digest


def model_weights_digest(name: str, revision: str | None = None) -> str:
    """The weights digest of a model name (zoo, local folder or cached hub id); "" if its files are not here."""
    folder = weights_folder(name, revision)
    return weights_digest(folder) if folder is not None else ""


@dataclass(frozen=True)
class KeySettings:
    """The readout settings a key digests: tokens per document, k, dtype (required), batch size, chunk size,
    device and device map (None where not set; batch and chunk sizes are keyed though they change no number)."""

    max_tokens: int | None
    k: int
    dtype: object
    batch_size: int | None = None
    chunk_tokens: int | None = None
    device: object = None
    device_map: object = None


def readout_key(name: str, revision: str | None, workload: Workload, *, lens: str = "logit", lens_digest: str = "",
                **settings) -> str:
    """Hex key of a readout of model `name`@`revision` on `workload` with these `KeySettings` (keywords); a
    readout under another lens than "logit" also keys on the lens' name and digest (`Lens.digest`: for the tuned
    lens, its translators'), which it needs."""
    if lens != "logit" and not lens_digest:
        raise ValueError(f"a {lens!r}-lens readout key needs the lens' digest (lens_digest: the translators' for "
                         "the tuned lens)")
    s = KeySettings(**settings)
    lens_part = {} if lens == "logit" else {"lens": lens, "lens_digest": lens_digest}  # logit keys stay as before
    return cache_key(kind="readout", model=name, revision=revision, weights=model_weights_digest(name, revision),
                     workload=workload.name, docs=docs_digest(workload.docs), max_tokens=s.max_tokens, k=s.k,
                     dtype=str(s.dtype), batch_size=s.batch_size, chunk_tokens=s.chunk_tokens, device=s.device,
                     device_map=s.device_map, readout_version=_version.__version__, **lens_part)
