"""Builds and trains candidate architectures (torch)."""
