"""Settings objects: a frozen dataclass of an entry point's many settings, and its keyword form.

An entry point with many settings (`readout`, `generate_early_exit`, `cached_readout`) takes one frozen
dataclass (`config=`) and still accepts each setting as a keyword argument; `with_settings` merges the two and
names the known settings when a keyword is not one of them, instead of Python's bare "unexpected keyword".
"""
from __future__ import annotations

from dataclasses import fields, is_dataclass, replace


def with_settings(config, overrides: dict, cls, where: str):
    """`config` (an instance of the dataclass `cls`; None: its defaults) with the keyword `overrides` applied.

    TypeError naming `where` and the known settings for an unknown keyword or a config of another type."""
    if not is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    known = [f.name for f in fields(cls) if f.init]
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise TypeError(f"{where}() got unknown setting(s) {', '.join(map(repr, unknown))}; "
                        f"its settings are: {', '.join(known)}")
    if config is None:
        return cls(**overrides)
    if not isinstance(config, cls):
        raise TypeError(f"{where}(config=...) must be a {cls.__name__}, got {type(config).__name__}")
    return replace(config, **overrides) if overrides else config


__all__ = ["with_settings"]
