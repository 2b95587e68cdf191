"""Utilities with no eeutils imports (see the package layout in docs/DESIGN.md)."""
