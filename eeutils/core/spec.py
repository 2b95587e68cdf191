"""`name@revision` model specs, parsed in one place."""
from __future__ import annotations

from pathlib import Path


class ModelSpecError(ValueError):
    """A model spec that is not NAME or NAME@REVISION."""


def parse_model_spec(spec) -> tuple[str, str | None]:
    """"org/model@rev" -> ("org/model", "rev"); "zoo/dense-mid" -> ("zoo/dense-mid", None);
    (name, revision) pairs pass through. An existing local path containing "@" is a name."""
    if isinstance(spec, (tuple, list)):
        if not spec:
            raise ModelSpecError("an empty (name, revision) pair")
        return str(spec[0]), (None if len(spec) < 2 else spec[1])
    if not isinstance(spec, str) or not spec.strip():
        raise ModelSpecError(f"a model must be a non-empty string (hub id, local folder or zoo/<name>), got {spec!r}")
    spec = spec.strip()
    if "@" in spec and not Path(spec).expanduser().exists():
        name, rev = spec.rsplit("@", 1)
        if not name or not rev:
            raise ModelSpecError(f"bad model spec {spec!r}: use NAME or NAME@REVISION")
        return name, rev
    return spec, None
