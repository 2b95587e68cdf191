"""``python -m eeutils.series``: the notebook series runner (`eeutils.notebook.series`), under its documented name."""
from .notebook.series import budget_table, list_notebooks, load_preset, main, parameters_for, run_series  # noqa: F401

if __name__ == "__main__":
    raise SystemExit(main())
