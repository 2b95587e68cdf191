"""`name@revision` model specs, parsed in one place."""
from __future__ import annotations

import re
from pathlib import Path

from .keys import WEIGHT_PATTERNS


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


def looks_like_path(name: str) -> bool:
    """True for names that can only be a file-system path ("/x", "./x", "~/x", "C:\\x", "a/b/c", "x/")."""
    return (name.startswith(("/", "./", "../", "~", ".\\")) or name.endswith(("/", "\\"))
            or name.count("/") > 1 or bool(re.match(r"^[A-Za-z]:[\\/]", name)))


def local_folder_problem(name: str) -> str | None:
    """Why `name`, a local path, is not a loadable model folder (None when it looks loadable)."""
    path = Path(name).expanduser()
    if not path.exists():
        return (f"local folder {str(path)!r} does not exist; check the path (a hub id looks like 'org/model', "
                "an embedded model like 'zoo/dense-mid')")
    if not path.is_dir():
        return f"{str(path)!r} is a file, not a model folder: pass the folder that holds config.json and the weights"
    if not (path / "config.json").is_file():
        return f"{str(path)!r} has no config.json, so it is not a Hugging Face model folder"
    if not any(any(path.glob(p)) for p in WEIGHT_PATTERNS + ("*.safetensors.index.json", "*.bin.index.json")):
        return (f"{str(path)!r} has a config.json but no weights (*.safetensors or *.bin); copy the weights "
                "into it, or pass the folder that has them")
    return None
