"""Utilities below every other layer: registries, file helpers."""
