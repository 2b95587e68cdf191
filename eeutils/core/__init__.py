"""Utilities with no eeutils imports: atomic files, environment, cache keys, model specs, package data (the zoo's
models and cards: `zoo_store`)."""
