"""Run one HrrAttention layer forward and backward on a long random sequence and report its cost."""

from __future__ import annotations

import argparse
import time

import torch

from .attention import HrrAttention


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seq-len", type=int, default=65_536, help="sequence length T")
    parser.add_argument("--dim", type=int, default=256, help="embedding size E")
    parser.add_argument("--heads", type=int, default=8)


def run(args: argparse.Namespace) -> int:
    torch.manual_seed(0)
    layer = HrrAttention(args.dim, args.heads)
    x = torch.randn(1, args.seq_len, args.dim, requires_grad=True)  # (B, T, E)
    start = time.perf_counter()
    y = layer(x)
    y.square().mean().backward()
    seconds = time.perf_counter() - start
    print(
        f"HrrAttention(E={args.dim}, heads={args.heads}) on T={args.seq_len:,}: "
        f"forward+backward {seconds:.2f} s, output {tuple(y.shape)}, finite={bool(torch.isfinite(y).all())}"
    )
    return 0
