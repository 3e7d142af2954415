"""research.mqar_probe: the key match, crosstalk and write counts of a memory built to recall, and
how a model answers."""

from __future__ import annotations

import numpy as np
import torch

from hrrformer import hrr
from hrrformer.data.mqar import multiquery_ar
from hrrformer.ops.hrr_attention import Routed
from research.mqar_probe import how_it_answers, probe_layer


class _ExactMemory:
    """Heads of a memory that recalls: k_s = π(code of token s − 1), q_t = π(code of token t),
    v_s = code of token s, so q_t† ⊛ k_s = δ where position s − 1 holds t's token."""

    write_gate = None

    def __init__(self, inputs: np.ndarray, dim: int) -> None:
        codes = torch.randn(int(inputs.max()) + 1, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        tokens = torch.as_tensor(inputs)
        before = torch.cat([torch.zeros_like(tokens[:, :1]), tokens[:, :-1]], dim=1)
        self.q, self.k, self.v = hrr.projection(codes[tokens]), hrr.projection(codes[before]), codes[tokens]

    def heads(self, x):
        return [h[:, None] for h in (self.q, self.k, self.v)]  # (B, 1, T, d) each


def test_a_memory_that_recalls_unbinds_each_key_exactly():
    data = multiquery_ar(8, vocab_size=64, seq_len=24, num_kv_pairs=3, rng=np.random.default_rng(0))
    result = probe_layer(_ExactMemory(data.inputs, 128), torch.zeros(8, 24, 1), data.inputs, data.labels, 3)
    assert result["delta_fraction"] > 1 - 1e-9  # q_t† ⊛ k_s is δ itself
    assert 8 <= result["writes"] <= 24  # no gate: every position up to the query writes
    assert 0.5 < result["crosstalk_ratio"] < 5  # ~√(writes): the other pairs, each the size of the pair's term
    assert result["gate_at_values"] == result["gate_elsewhere"] == 1.0


class _RoutedExactMemory(_ExactMemory):
    """The exact memory with 8 memories routed by the token each key or query carries (one-hot by
    token mod 8), so a query reads its own pair at weight 1 and another at weight 0 or 1."""

    def __init__(self, inputs: np.ndarray, dim: int) -> None:
        super().__init__(inputs, dim)
        tokens = torch.as_tensor(inputs)
        before = torch.cat([torch.zeros_like(tokens[:, :1]), tokens[:, :-1]], dim=1)
        self.rq, self.rk = (torch.nn.functional.one_hot(t % 8, 8).double()[:, None] for t in (tokens, before))

    def heads(self, x):
        q, k, v = super().heads(x)
        return [Routed(q, self.rq), Routed(k, self.rk), v]


def test_routes_keep_other_pairs_out_of_a_read():
    data = multiquery_ar(8, vocab_size=64, seq_len=24, num_kv_pairs=3, rng=np.random.default_rng(0))
    one = probe_layer(_ExactMemory(data.inputs, 128), torch.zeros(8, 24, 1), data.inputs, data.labels, 3)
    routed = probe_layer(_RoutedExactMemory(data.inputs, 128), torch.zeros(8, 24, 1), data.inputs, data.labels, 3)
    assert routed["route_own"] == 1.0 and one["route_own"] == one["route_others"] == 1.0
    assert routed["route_others"] < 0.3  # ~1/8 of the other pairs share the query's memory
    assert routed["delta_fraction"] > 1 - 1e-9
    assert routed["writes"] < one["writes"] / 2 and routed["crosstalk_ratio"] < one["crosstalk_ratio"]


class _Answers(torch.nn.Module):
    """Logits that pick, at every position, the first value of the sequence."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(tokens[:, 1:2].expand_as(tokens), 64).double()  # (N, T, V)


def test_how_a_model_answers():
    data = multiquery_ar(50, vocab_size=64, seq_len=24, num_kv_pairs=4, rng=np.random.default_rng(1))
    answers = how_it_answers(_Answers(), data.inputs, data.labels, 4)
    assert answers["answer_is_a_value_of_the_sequence"] == 1.0
    assert 0.1 < answers["accuracy"] < 0.45  # right where the first key is the one asked: ~1/4
