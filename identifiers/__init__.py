"""Identifier schemes, one module each, looked up by name in :mod:`identifiers.registry`."""
