"""Attention maps (``hrrformer.explain``): the weights, the files the command writes, and a planted-region run."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from hrrformer.attention import HrrAttention
from hrrformer.cli import main
from hrrformer.explain import attention_maps, explain_tokens, read_input, top_regions
from hrrformer.model import Hrrformer, HrrformerConfig, HrrformerDualEncoder
from hrrformer.train import TrainConfig, build_model


def tiny(**overrides) -> HrrformerConfig:
    values = dict(vocab_size=20, max_len=24, dim=16, heads=2, layers=2, mlp_dim=16, dropout=0.0)
    return HrrformerConfig(**{**values, **overrides})


def padded_batch() -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    torch.manual_seed(0)
    lengths = [24, 17, 5]
    tokens = torch.randint(1, 20, (3, 24))
    mask = torch.arange(24)[None] >= torch.tensor(lengths)[:, None]
    return tokens.masked_fill(mask, 0), mask, lengths


def make_run(run: Path, task: str, *, max_len: int, pooling: str = "mean", attention: str = "hrr", **extra) -> Path:
    """A run directory (config.json + model.safetensors) holding an untrained model."""
    model = dict(vocab_size=257, max_len=max_len, dim=16, heads=2, layers=1, mlp_dim=16, pooling=pooling)
    model.update(attention=attention, num_classes=2, pos_embedding="sinusoidal")
    config = TrainConfig(task=task, attention=attention, model=model, **extra)
    torch.manual_seed(0)
    net = build_model(config)
    run.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(run / "model.safetensors"))
    (run / "config.json").write_text(json.dumps(asdict(config)))
    return run


# ----------------------------------------------------------------------------- the weights
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_weights_sum_to_one_over_real_positions_and_are_zero_at_padding(pooling):
    model = Hrrformer(tiny(pooling=pooling)).train()
    tokens, mask, lengths = padded_batch()
    full = attention_maps(model, tokens, mask, include_cls=True)
    width = 24 + (pooling == "cls")
    assert full.shape == (2, 2, 3, width) and full.dtype == np.float32
    keep = ~mask.numpy()
    if pooling == "cls":
        keep = np.concatenate([np.ones((3, 1), bool), keep], axis=1)
    np.testing.assert_allclose(full.sum(-1), 1.0, atol=1e-5)  # per layer, head and input
    assert (full[..., ~keep] == 0).all() and (full[..., keep] > 0).all()
    maps = attention_maps(model, tokens, mask)
    assert maps.shape == (2, 2, 3, 24)
    np.testing.assert_array_equal(maps, full[..., width - 24 :])  # CLS (position 0) dropped: aligned with input
    for i, n in enumerate(lengths):
        assert (maps[..., i, n:] == 0).all()
    # State restored: still training, no flag or recorded weights left on the layers.
    assert model.training
    for block in model.encoder.blocks:
        assert block.attn.record_weights is False and "record_weights" not in vars(block.attn)
        assert not hasattr(block.attn, "last_weights")


def test_maps_do_not_depend_on_batch_padding_and_match_a_layer_run_alone():
    model = Hrrformer(tiny(layers=1))
    tokens, mask, lengths = padded_batch()
    batch = attention_maps(model, tokens, mask)
    alone = attention_maps(model, tokens[2, : lengths[2]])  # (T,) input, default mask
    np.testing.assert_allclose(batch[:, :, 2, : lengths[2]], alone[:, :, 0], atol=1e-6)
    # The same weights as the layer records itself in a forward of the model in eval mode.
    attn = model.encoder.blocks[0].attn
    attn.record_weights = True
    model.eval()
    with torch.no_grad():
        model(tokens, mask)
    np.testing.assert_allclose(batch[0], attn.last_weights.permute(1, 0, 2).numpy(), atol=1e-6)


def test_dual_encoder_maps_and_no_prediction():
    model = HrrformerDualEncoder(tiny())
    tokens, mask, _ = padded_batch()
    maps, probs = explain_tokens(model, tokens, mask)
    assert maps.shape == (2, 2, 3, 24) and probs is None
    maps, probs = explain_tokens(Hrrformer(tiny()), tokens, mask)
    assert probs.shape == (3, 2)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_softmax_attention_is_refused(tmp_path, capsys):
    model = Hrrformer(tiny(attention="softmax"))
    with pytest.raises(ValueError, match="T × T"):
        attention_maps(model, torch.ones(1, 5, dtype=torch.long))
    assert all(not isinstance(b.attn, HrrAttention) for b in model.encoder.blocks)
    run = make_run(tmp_path / "run", "binaries", max_len=64, attention="softmax")
    file = tmp_path / "x.bin"
    file.write_bytes(b"abc")
    assert main(["explain", str(run), str(file), "--out", str(tmp_path / "out")]) == 1
    assert "T × T" in capsys.readouterr().err


def test_top_regions_finds_non_overlapping_windows_heaviest_first():
    w = np.full(100, 1.0)
    w[40:48] = 5.0
    w[10:14] = 3.0
    regions = top_regions(w / w.sum(), k=3, window=8)
    assert [r.offset for r in regions][:1] == [40]
    assert 6 <= regions[1].offset <= 10  # the window holding 10–13
    for a in regions:
        for b in regions:
            assert a is b or a.offset + a.length <= b.offset or b.offset + b.length <= a.offset
    assert regions[0].weight > regions[1].weight > regions[2].weight
    assert regions[0].lift == pytest.approx(regions[0].weight / (8 / 100))
    assert top_regions(w, k=2, window=500, length=30)[0].length == 30


# ----------------------------------------------------------------------------- the command
def write_images(root: Path, n: int = 4) -> list[Path]:
    """An image-folder data set train/{a,b}/*.png of 32×32 RGB images."""
    rng = np.random.default_rng(0)
    paths = []
    for cls in ("a", "b"):
        (root / "train" / cls).mkdir(parents=True)
        for i in range(n):
            path = root / "train" / cls / f"{i}.png"
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
            paths.append(path)
    return paths


def test_image_run_writes_maps_at_the_image_shape(tmp_path, capsys):
    from hrrformer.data import load_task

    data = tmp_path / "images"
    images = write_images(data)
    run = make_run(tmp_path / "run", "image", max_len=1024, data=str(data), class_names=["a", "b"])
    out = tmp_path / "out"
    args = ["explain", str(run), str(images[0]), "--out", str(out), "--average", "3", "--split", "train"]
    assert main(args) == 0
    # Gray exactly as the loader makes it: the input's tokens are one of the loaded sequences.
    tokens = read_input("image", images[0], 1024).tokens
    loaded = load_task("image", data, seed=0).train
    assert any(torch.equal(tokens, loaded[i][0]) for i in range(len(loaded)))

    mean = np.load(out / "0.png.mean.npy")
    assert mean.shape == (32, 32) and mean.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.load(out / "0.png.weights.npy").shape == (1, 2, 32, 32)
    with Image.open(out / "0.png.heatmap.png") as heatmap:
        assert heatmap.size == (32, 32)
    with Image.open(out / "0.png.png") as figure:
        assert figure.size[0] > figure.size[1]  # the input beside two heads and their mean
    for cls in ("a", "b"):
        assert np.load(out / f"average-{cls}.mean.npy").shape == (32, 32)
        assert np.load(out / f"average-{cls}.input.npy").shape == (32, 32)
    assert (out / "average.png").stat().st_size > 1000
    summary = json.loads((out / "explain.json").read_text())
    assert summary["inputs"][0]["prediction"] in ("a", "b")
    assert [a["examples"] for a in summary["averages"]] == [3, 3]
    assert "average.png" in capsys.readouterr().out


def test_text_run_writes_strip_regions_and_highlighted_html(tmp_path, capsys):
    run = make_run(tmp_path / "run", "text", max_len=64, pooling="cls", class_names=["neg", "pos"])
    review = tmp_path / "review.txt"
    review.write_text("Un film très <b>beau</b> & touchant, " * 4, encoding="utf-8")  # 160 bytes: truncated
    out = tmp_path / "out"
    assert main(["explain", str(run), str(review), "--out", str(out), "--top-k", "3", "--window", "8"]) == 0
    maps = np.load(out / "review.txt.weights.npy")
    assert maps.shape == (1, 2, 64)  # CLS dropped: one weight per byte
    assert maps.sum(-1).min() > 0.9 and maps.sum(-1).max() < 1.0  # the rest is the CLS token's weight
    regions = json.loads((out / "review.txt.regions.json").read_text())
    assert len(regions) == 3 and all(r["length"] == 8 and isinstance(r["content"], str) for r in regions)
    page = (out / "review.txt.html").read_text(encoding="utf-8")
    assert "è" in page and "&lt;" in page and "<b>" not in page  # decoded as UTF-8, escaped
    assert (out / "review.txt.png").stat().st_size > 1000
    summary = json.loads((out / "explain.json").read_text())
    assert summary["inputs"][0]["truncated"] is True and summary["inputs"][0]["tokens"] == 64
    assert "#3" in capsys.readouterr().out


def test_listops_and_pair_runs_write_npy_and_strip(tmp_path):
    expression = tmp_path / "expr.txt"
    expression.write_text("( ( [MAX 2 9 ( ( [MIN 4 7 ] ) ) 0 ] ) )")
    run = make_run(tmp_path / "listops", "listops", max_len=32)
    assert main(["explain", str(run), str(expression), "--out", str(tmp_path / "a"), "--top-k", "2"]) == 0
    assert np.load(tmp_path / "a" / "expr.txt.weights.npy").shape == (1, 2, 9)
    regions = json.loads((tmp_path / "a" / "expr.txt.regions.json").read_text())
    assert len(regions) == 1 and regions[0]["length"] == 8  # window 8 (the minimum) of 9 positions
    assert regions[0]["content"].startswith(("[MAX", "2"))

    run = make_run(tmp_path / "pairs", "retrieval", max_len=32, pair=True)
    doc = tmp_path / "doc.txt"
    doc.write_text("a citing paper")
    assert main(["explain", str(run), str(doc), "--out", str(tmp_path / "b")]) == 0
    summary = json.loads((tmp_path / "b" / "explain.json").read_text())
    assert "prediction" not in summary["inputs"][0] and (tmp_path / "b" / "doc.txt.png").exists()


def test_command_errors(tmp_path, capsys):
    run = make_run(tmp_path / "run", "image", max_len=1024)
    assert main(["explain", str(run), "--out", str(tmp_path / "o")]) == 1  # nothing to explain
    assert main(["explain", str(run), str(tmp_path / "missing.png"), "--out", str(tmp_path / "o")]) == 1
    assert main(["explain", str(run), "--average", "2", "--out", str(tmp_path / "o")]) == 1  # no data path
    err = capsys.readouterr().err
    assert "--average" in err and "missing.png" in err


# ----------------------------------------------------------------------------- a planted region
def test_planted_region_end_to_end(tmp_path, capsys):
    """Class 1 files have bytes 100–131 all 0xAA, the rest random: train a tiny model, then measure
    the map's weight on that region against the average weight (a finding, printed, not asserted)."""
    rng = np.random.default_rng(0)
    data = tmp_path / "files"
    for label, name in enumerate(["benign", "malicious"]):
        (data / name).mkdir(parents=True)
        for i in range(40):
            content = rng.integers(1, 256, 256, dtype=np.uint8)
            if label:
                content[100:132] = 0xAA
            (data / name / f"f{i:02d}.bin").write_bytes(content.tobytes())
    run = tmp_path / "run"
    tiny_args = ["--dim", "16", "--heads", "2", "--layers", "1", "--mlp-dim", "32", "--max-len", "256"]
    train = ["train", "--task", "binaries", "--data", str(data), "--out", str(run), *tiny_args]
    train += ["--pooling", "mean", "--epochs", "3", "--batch-size", "8", "--no-progress"]
    assert main(train) == 0
    accuracy = json.loads((run / "summary.json").read_text())["val_accuracy"]

    out = tmp_path / "out"
    file = data / "malicious" / "f00.bin"
    explain = ["explain", str(run), str(file), "--out", str(out), "--average", "4", "--label", "malicious"]
    assert main([*explain, "--top-k", "3", "--window", "32"]) == 0
    capsys.readouterr()
    one = np.load(out / "f00.bin.mean.npy")
    average = np.load(out / "average-malicious.mean.npy")
    assert one.shape == average.shape == (256,)
    assert (out / "f00.bin.png").exists() and (out / "f00.bin.html").exists()

    untrained = Hrrformer(HrrformerConfig(vocab_size=257, max_len=256, dim=16, heads=2, mlp_dim=32))
    control = attention_maps(untrained, read_input("binaries", file, 256).tokens).mean((0, 1))[0]
    lifts = {
        name: float(m[100:132].mean() / m.mean())
        for name, m in (("file", one), ("average", average), ("untrained", control))
    }
    assert all(np.isfinite(v) for v in lifts.values())
    top = json.loads((out / "f00.bin.regions.json").read_text())[0]
    with capsys.disabled():
        print(
            f"\nplanted region 100–131: val accuracy {accuracy:.2f}; mean weight there / average weight: "
            + ", ".join(f"{k} {v:.2f}×" for k, v in lifts.items())
            + f"; top region at offset {top['offset']} ({top['lift']:.2f}×)"
        )
