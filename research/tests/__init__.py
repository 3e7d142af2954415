"""Tests of the research code (collected by ``python -m pytest`` from the repository root)."""
