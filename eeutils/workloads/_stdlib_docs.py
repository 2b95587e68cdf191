"""Docstrings of standard-library modules, read in a clean interpreter.

Run as a script (`python -I -S _stdlib_docs.py MIN_CHARS MODULE...`), it prints JSON pairs
(qualified name, "name\\n\\ndocstring"). Installed packages can add or wrap members of stdlib
classes and functions (transformers adds `logging.Logger.warning_advice`, for one), so the corpus
reads them in an interpreter started without site-packages, where nothing can have patched them.
Standard library only: this file must not import eeutils.
"""
import importlib
import inspect
import json
import sys


def _defined_in(obj, modname: str) -> bool:
    target = obj.fget if isinstance(obj, property) else obj
    return getattr(target, "__module__", None) == modname


def stdlib_docs(modules, min_chars: int) -> list:
    seen = set()
    out = []

    def add(qualname, obj):
        try:
            doc = inspect.getdoc(obj)
        except Exception:  # exotic objects
            doc = None
        if not doc or len(doc) < min_chars or doc in seen:
            return
        seen.add(doc)
        out.append((qualname, f"{qualname}\n\n{doc}"))

    for modname in modules:
        mod = importlib.import_module(modname)
        add(modname, mod)
        for name in sorted(vars(mod)):
            obj = vars(mod)[name]
            if name.startswith("_") or not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if not _defined_in(obj, modname):
                continue
            add(f"{modname}.{name}", obj)
            if inspect.isclass(obj):
                for mname in sorted(vars(obj)):
                    member = vars(obj)[mname]
                    if isinstance(member, (staticmethod, classmethod)):
                        member = member.__func__
                    if mname.startswith("_") or not (inspect.isfunction(member) or isinstance(member, property)):
                        continue
                    if _defined_in(member, modname):
                        add(f"{modname}.{name}.{mname}", member)
    return out


if __name__ == "__main__":
    json.dump(stdlib_docs(sys.argv[2:], int(sys.argv[1])), sys.stdout)
