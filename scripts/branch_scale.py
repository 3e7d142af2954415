"""How much each block's attention adds to the residual stream: RMS(attention output) / RMS(x),
and, for HRR, how far its weights focus.

For each run directory given: the trained model, then the same configuration freshly initialised
with HRR and with softmax attention, on the first 16 validation examples (real positions only;
for a pair task the shared encoder on the first sequence of each pair).
For trained HRR blocks also: the entropy of w over the n real positions divided by log n (1 =
uniform), the largest weight times n (1 = uniform), and the score scale τ per head when set.
HRR attention outputs w_t·v_t with Σ_t w_t = 1, so at initialisation its branch is about 1/T of
the residual; softmax attention outputs Σ_s w_ts·v_s, a weighted mean of values.

Usage: python scripts/branch_scale.py [--trained-only] RUN_DIR...   (EXPERIMENTS.md, "Why HRR stays at
chance"; --trained-only skips the freshly initialised models)
"""

from __future__ import annotations

import argparse

import torch

from hrrformer.attention import HrrAttention
from hrrformer.config import HRR_ONLY_OPTIONS
from hrrformer.data.base import collate
from hrrformer.distributed import DistInfo
from hrrformer.train import build_model, load_data, load_run


def branch_ratios(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> list[float]:
    """RMS(attention branch) / RMS(residual input), one value per block."""
    ratios: list[float] = []

    def hook(block: torch.nn.Module, args: tuple, _result: torch.Tensor) -> None:
        x, mask = args[0], args[1]  # (B, T', D), (B, T'): the block's input (T' = T + 1 with a CLS token)
        real = ~mask  # (B, T')
        attended = block.attn(block.attention_input(x), mask)  # (B, T', D)
        ratios.append((attended[real].pow(2).mean().sqrt() / x[real].pow(2).mean().sqrt()).item())

    handles = [block.register_forward_hook(hook) for block in model.encoder.blocks]
    with torch.no_grad():
        model.encoder(batch["tokens"], batch["mask"])
    for handle in handles:
        handle.remove()
    return ratios


def focus(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> list[str]:
    """Per HRR block: mean over examples and heads of H(w)/log n and of max_t w_t·n, and τ."""
    layers = [m for m in model.modules() if isinstance(m, HrrAttention)]
    for layer in layers:
        layer.record_weights = True
    with torch.no_grad():
        model.encoder(batch["tokens"], batch["mask"])
    lines = []
    for layer in layers:
        layer.record_weights = False
        w = layer.last_weights.double()  # (B, h, T'), T' = T + 1 with a CLS token, which is real
        n = ((~batch["mask"]).sum(1) + w.shape[-1] - batch["mask"].shape[1]).double()[:, None]  # (B, 1)
        entropy = -(w * w.clamp_min(1e-300).log()).sum(-1) / n.log()  # (B, h)
        peak = w.amax(-1) * n  # (B, h)
        tau = layer.score_scales()
        shown = "" if tau is None else " τ " + " ".join(f"{x:.2f}" for x in tau.tolist())
        lines.append(f"H(w)/log n {entropy.mean():.3f}, max w·n {peak.mean():.1f}{shown}")
    return lines


def main(run_dirs: list[str], trained_only: bool = False) -> None:
    torch.set_num_threads(1)
    for run_dir in run_dirs:
        config, trained = load_run(run_dir)
        data = load_data(config, DistInfo())
        batch = collate([data.val[i] for i in range(16)])
        if "tokens_a" in batch:  # a pair task: the shared encoder on the first sequence of each pair
            batch = {"tokens": batch["tokens_a"], "mask": batch["mask_a"]}
        length = (~batch["mask"]).sum(1).float().mean().item()
        print(f"{run_dir}: mean length {length:.0f}")
        print(f"  trained {config.model['attention']:8s}", [f"{r:.2e}" for r in branch_ratios(trained, batch)])
        for line in focus(trained, batch):
            print(f"  trained weights: {line}", flush=True)
        if trained_only:
            continue
        for attention in ("hrr", "softmax"):
            config.model["attention"] = attention
            if attention == "softmax":
                config.model.update(HRR_ONLY_OPTIONS)  # the HRR variant's options off
            torch.manual_seed(config.seed)
            fresh = build_model(config).eval()
            print(f"  init    {attention:8s}", [f"{r:.2e}" for r in branch_ratios(fresh, batch)])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--trained-only", action="store_true", help="skip the freshly initialised models")
    args = parser.parse_args()
    main(args.run_dirs, args.trained_only)
