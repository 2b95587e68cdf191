"""Workloads: named, pluggable lists of documents to read out, some with reference answers.

A workload is a list of `Doc`s plus a name and a kind:

- kind ``"lm"``: plain text; early-exit quality is scored on every next-token prediction.
- kind ``"qa"``: ``Doc(prompt, answer)`` pairs; accuracy is exact match on the answer tokens.

Modules: `types` (Doc, Workload; imports nothing else from eeutils), `registry` (register_workload,
get_workload, your own workloads), `corpus` (the zoo's offline corpus), `builtins` (the registered
offline zoo workloads and the online `datasets` ones).
"""
from . import builtins as _builtins  # noqa: F401  (registers the built-in workloads)
from .registry import (get_workload, list_workloads, register_workload, unregister_workload, workload_from_pairs,
                       workload_from_text_file, workload_from_texts, workload_names)
from .types import KINDS, Doc, Workload, WorkloadUnavailable, docs_digest

__all__ = ["KINDS", "Doc", "Workload", "WorkloadUnavailable", "docs_digest", "get_workload", "list_workloads",
           "register_workload", "unregister_workload", "workload_from_pairs", "workload_from_text_file",
           "workload_from_texts", "workload_names"]
