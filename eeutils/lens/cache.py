"""Cache keys of readouts: one content-addressed key for the benchmark's and the notebooks' readout caches.

The key digests everything that changes a number in a readout: the model's weights (the sha256 of its
weight, config and tokenizer files; for a hub id not in the local cache, its name and revision), the
documents' content, and the readout settings (tokens per document, k, dtype, batch size, chunk size,
device). A model rebuilt or fine-tuned in place therefore never reuses a stale readout.
"""
from __future__ import annotations

from .. import _version
from ..arch.names import weights_folder
from ..core.keys import cache_key, weights_digest
from ..workloads.types import Workload, docs_digest


def model_weights_digest(name: str, revision: str | None = None) -> str:
    """The weights digest of a model name (zoo, local folder or cached hub id); "" if its files are not here."""
    folder = weights_folder(name, revision)
    return weights_digest(folder) if folder is not None else ""


def readout_key(name: str, revision: str | None, workload: Workload, *, max_tokens, k: int, dtype,
                batch_size: int | None = None, chunk_tokens: int | None = None, device=None, device_map=None,
                lens: str = "logit", lens_digest: str = "") -> str:
    """Hex key of a readout of model `name`@`revision` on `workload` with these settings; a tuned-lens readout
    also keys on its translators' digest (`TunedLens.digest`)."""
    if lens != "logit" and not lens_digest:
        raise ValueError(f"a {lens!r}-lens readout key needs the translators' digest (lens_digest)")
    lens_part = {} if lens == "logit" else {"lens": lens, "lens_digest": lens_digest}  # logit keys stay as before
    return cache_key(kind="readout", model=name, revision=revision, weights=model_weights_digest(name, revision),
                     workload=workload.name, docs=docs_digest(workload.docs), max_tokens=max_tokens, k=k,
                     dtype=str(dtype), batch_size=batch_size, chunk_tokens=chunk_tokens, device=device,
                     device_map=device_map, readout_version=_version.__version__, **lens_part)
