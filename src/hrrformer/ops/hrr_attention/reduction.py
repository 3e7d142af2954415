"""The one seam through which HRR attention couples positions: sums over the sequence.

HRR attention needs, per (batch, head), only two sums over time — the superposition β and the
softmax normaliser Z (and, with ``causal``, their prefixes) — plus one minimum, the common
power-of-two scale of the range control. A :class:`SequenceReduction` takes them for a
sequence held as ``pieces``: the chunks this process computes one after another (one piece
without chunking), each a contiguous run of positions in order, and, with a process ``group``,
the ranks' parts of the sequence in rank order::

    total(parts)             Σ over every piece of every rank                  (same for all pieces)
    exclusive_prefix(parts)  for piece c on rank r: Σ_{r' < r} Σ_all + Σ_{c' < c} parts[c']
    minimum(parts)           elementwise min over every piece of every rank     (no gradient)
    halo(pieces, W)          for piece c: the W positions of the sequence right before it

``parts[c]`` is piece c's own sum (already reduced over its positions). With one piece and no
group each is the identity (``total``), zeros (``exclusive_prefix``) or the part itself
(``minimum``), so single-process, chunked, sequence-parallel and chunked + sequence-parallel
attention are the same kernel code with a different reduction. Sums are autograd-aware.

``halo`` serves the layer parts that look at neighbouring positions (a causal convolution of
kernel K needs the K − 1 positions before each piece): piece c gets the last W positions of the
pieces before it, and past this rank's first position those of the ranks before it (r − 1, and
r − 2, … where their parts are shorter than W); zeros before the sequence's start. It is
autograd-aware too: a position's gradient returns to the piece and rank it came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ... import collectives
from ...collectives import Group

__all__ = ["LOCAL", "SequenceReduction"]


@dataclass(frozen=True)
class SequenceReduction:
    """Sums over a sequence split into in-process pieces and, optionally, over a process group."""

    group: Group = None

    @property
    def ranks(self) -> int:
        """How many processes hold parts of the sequence (1 without a group)."""
        return collectives.group_size(self.group)

    @property
    def rank(self) -> int:
        """This process's position among them (0 without a group)."""
        return collectives.group_rank(self.group)

    @property
    def parallel(self) -> bool:
        """Whether the sequence is split over more than one process."""
        return self.ranks > 1

    def sequence_length(self, local_length: int) -> int:
        """An upper bound on the whole sequence's length, from this rank's ``local_length``
        (ranks' parts may differ by one: the model's CLS token sits on rank 0)."""
        return (local_length + 1) * self.ranks if self.parallel else local_length

    def total(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        """Σ of every piece's part over the whole sequence (all pieces, all ranks)."""
        local = parts[0] if len(parts) == 1 else torch.stack(list(parts)).sum(0)
        return collectives.all_reduce_sum(local, self.group)

    def exclusive_prefix(self, parts: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """For each piece, the Σ of the parts of every piece before it in the sequence."""
        if self.parallel:
            local = parts[0] if len(parts) == 1 else torch.stack(list(parts)).sum(0)
            before = collectives.exclusive_prefix_sum(local, self.group)
        else:
            before = torch.zeros_like(parts[0])
        out = []
        for part in parts:
            out.append(before)
            before = before + part
        return out

    def minimum(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        """Elementwise min of the parts over the whole sequence (no gradient)."""
        local = parts[0] if len(parts) == 1 else torch.stack(list(parts)).amin(0)
        return collectives.all_reduce_min(local.detach(), self.group)

    def halo(self, pieces: Sequence[torch.Tensor], width: int) -> list[torch.Tensor]:
        """For each piece (B, T_c, …) of this rank's part, the ``width`` positions of the whole
        sequence right before it, (B, width, …): zeros where they would lie before its start.

        Only the last ``width`` positions of each piece are read (passing those alone is the same).
        With a group: one all-gather of each rank's last ``width`` positions (autograd-aware) and
        one of its length, so a rank whose part is shorter than ``width`` passes on positions of
        the ranks before it too."""
        if width < 1:
            raise ValueError(f"a halo is at least one position wide, got width={width}")
        first = pieces[0]
        carry = first.new_zeros(first.shape[0], width, *first.shape[2:])  # (B, W, …): before the start
        if self.parallel:
            tail = carry
            for piece in pieces:
                tail = _last_positions(tail, piece, width)  # this rank's last W positions, zeros in front
            lengths = collectives.gather_ints([sum(p.shape[1] for p in pieces)], self.group, first.device)
            tails = collectives.all_gather_stack(tail, self.group)  # (G, B, W, …)
            # an empty slice ties rank 0's output to the gather too: every rank joins its backward
            carry = torch.cat([carry, tails[0][:, :0]], dim=1)
            for r in range(self.rank):
                carry = _last_positions(carry, tails[r][:, width - min(lengths[r][0], width) :], width)
        out = []
        for piece in pieces:
            out.append(carry)
            carry = _last_positions(carry, piece, width)
        return out


def _last_positions(before: torch.Tensor, piece: torch.Tensor, width: int) -> torch.Tensor:
    """The last ``width`` positions of ``before`` (B, width, …) followed by ``piece`` (B, T, …)."""
    if piece.shape[1] >= width:
        return piece[:, piece.shape[1] - width :]
    return torch.cat([before[:, piece.shape[1] :], piece], dim=1)


#: One process, one piece: every reduction is the identity.
LOCAL = SequenceReduction()
