"""Attention kernels, one folder per op (``ops/<op>/``: its reference beside its fast forms)."""
