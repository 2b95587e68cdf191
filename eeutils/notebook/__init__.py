"""What the notebooks share: `setup` (the one-call first cell), experiments (cached readouts, EAS tables,
group effects), findings, plotting, the explorer widget and the series runner."""
from .setup import setup

__all__ = ["setup"]
