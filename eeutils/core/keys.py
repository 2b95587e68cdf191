"""Content-addressed cache keys: a digest of every setting that changes a number, weights included."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
# files beside the weights that change what a model computes (architecture, tokenisation)
CONFIG_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")
_FILE_MEMO: dict = {}


def _file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _FILE_MEMO:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _FILE_MEMO[key] = h.hexdigest()
    return _FILE_MEMO[key]


def state_dict_digest(module) -> str:
    """sha256 over the names, dtypes, shapes and bytes of a module's state dict (an in-memory model)."""
    import torch

    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def folder_digest(folder) -> str:
    """sha256 of the weight files (safetensors, else .bin) of a model folder and of its config and tokenizer
    files, "" when it has no weights."""
    folder = Path(folder)
    files = []
    for pattern in WEIGHT_PATTERNS:
        files = sorted(folder.glob(pattern))
        if files:
            break
    if not files:
        return ""
    files += [folder / n for n in CONFIG_FILES if (folder / n).is_file()]
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}:{_file_sha256(f)};".encode())
    return h.hexdigest()


def weights_digest(model_or_folder) -> str:
    """A digest of a model's weights: its folder's weight files (sha256) or, for an in-memory
    nn.Module (or anything with a `.model` module), its state dict."""
    if isinstance(model_or_folder, (str, Path)):
        return folder_digest(model_or_folder)
    module = getattr(model_or_folder, "model", model_or_folder)
    return state_dict_digest(module)


def cache_key(**settings) -> str:
    """Hex sha256 of the settings (JSON, sorted keys); pass everything that changes a number."""
    blob = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()
