"""What the notebooks share: `start` (the first cell's parameters and output folders), experiments (cached
readouts, EAS tables, group effects), findings, plotting, the explorer widget and the series runner."""
from .setup import NotebookRun, start

__all__ = ["NotebookRun", "start"]
