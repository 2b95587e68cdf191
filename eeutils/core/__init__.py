"""Utilities with no eeutils imports: atomic files, environment, cache keys, model specs, package data."""
