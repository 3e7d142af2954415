"""Classification metrics in plain numpy: confusion matrix, per-class precision/recall/F1, and for
two classes ROC AUC and the detection rate at a fixed false-positive rate (as EMBER reports); for
tasks labelled per position (MQAR), accuracy over the labelled positions and per sequence.

Conventions: confusion rows are the true class, columns the predicted one. For two classes the
positive class is class 1 (``malicious`` after ``benign``, ``pos`` after ``neg``) and the score
is its probability. A metric that is undefined on the data (a precision with no prediction of
the class, an AUC with one class only) is None.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "FPR_TARGETS",
    "classification_report",
    "confusion_matrix",
    "detection_rate_at_fpr",
    "misses_per_sequence",
    "per_class_scores",
    "position_report",
    "roc_auc",
    "sequences_all_right",
]

#: False-positive rates at which two-class reports give the detection rate (1 % and 0.1 %).
FPR_TARGETS = (0.01, 0.001)


def confusion_matrix(labels: Sequence[int], predictions: Sequence[int], num_classes: int) -> np.ndarray:
    """(C, C) int64 counts: entry [t, p] = examples of true class t predicted as p."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)), 1)
    return counts


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator / denominator) if denominator else None


def per_class_scores(confusion: np.ndarray, class_names: Sequence[str]) -> dict[str, dict]:
    """Class name → precision, recall, F1 and support (true examples) from a confusion matrix."""
    scores = {}
    for c, name in enumerate(class_names):
        hits, predicted, support = confusion[c, c], confusion[:, c].sum(), confusion[c, :].sum()
        precision, recall = _ratio(hits, predicted), _ratio(hits, support)
        f1 = None
        if precision is not None and recall is not None:
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores[name] = {"precision": precision, "recall": recall, "f1": f1, "support": int(support)}
    return scores


def roc_auc(scores: Sequence[float], positives: Sequence[bool]) -> float | None:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties counting ½.

    Computed from average ranks (Mann–Whitney U); None unless both classes occur."""
    scores, positives = np.asarray(scores, dtype=np.float64), np.asarray(positives, dtype=bool)
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if not n_pos or not n_neg:
        return None
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # 1-based rank of the last member of each group of equal scores
    ranks = ((last - counts + 1 + last) / 2)[inverse]
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def detection_rate_at_fpr(scores: Sequence[float], positives: Sequence[bool], fpr: float) -> dict | None:
    """The largest true-positive rate whose false-positive rate is at most ``fpr``.

    Positive means ``score > threshold``; the threshold is the ⌊fpr · negatives⌋+1-th largest
    negative score, so that at most ⌊fpr · negatives⌋ negatives score above it (with fewer
    than 1/fpr negatives that is none). Returns the detection rate, threshold and the
    false-positive rate reached, or None unless both classes occur."""
    scores, positives = np.asarray(scores, dtype=np.float64), np.asarray(positives, dtype=bool)
    negative = np.sort(scores[~positives])[::-1]
    if not positives.any() or not len(negative):
        return None
    allowed = int(np.floor(fpr * len(negative) + 1e-9))
    threshold = float(negative[allowed]) if allowed < len(negative) else float(negative[-1]) - 1.0
    return {
        "detection_rate": float((scores[positives] > threshold).mean()),
        "threshold": threshold,
        "false_positive_rate": float((negative > threshold).mean()),
    }


def classification_report(logits: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str]) -> dict:
    """Every metric of ``logits`` (N, C) against ``labels`` (N,) as a JSON-ready dict.

    Keys: examples, accuracy, loss (mean cross-entropy), class_names, confusion_matrix,
    per_class; for two classes also positive_class, roc_auc and detection_rate_at_fpr
    (keyed by the rate, e.g. ``"0.01"``)."""
    logits, labels = logits.float(), labels.long()
    n, num_classes = len(labels), len(class_names)
    confusion = confusion_matrix(labels.tolist(), logits.argmax(-1).tolist(), num_classes)
    report: dict = {
        "examples": n,
        "accuracy": _ratio(np.trace(confusion), n),
        "loss": float(F.cross_entropy(logits, labels)) if n else None,
        "class_names": list(class_names),
        "confusion_matrix": confusion.tolist(),
        "per_class": per_class_scores(confusion, class_names),
    }
    if num_classes == 2:
        scores = logits.softmax(-1)[:, 1].numpy() if n else np.zeros(0)
        positives = labels.numpy() == 1
        report["positive_class"] = class_names[1]
        report["roc_auc"] = roc_auc(scores, positives)
        report["detection_rate_at_fpr"] = {str(f): detection_rate_at_fpr(scores, positives, f) for f in FPR_TARGETS}
    return report


def misses_per_sequence(hit: torch.Tensor, sequences: torch.Tensor, n: int) -> torch.Tensor:
    """(n,) float64: the wrong rows of each of n sequences, from ``hit`` (N,) bool (a labelled
    position answered right) and ``sequences`` (N,) (the sequence of each position)."""
    misses = torch.zeros(n, dtype=torch.float64, device=hit.device)
    return misses.index_add_(0, sequences, (~hit).to(torch.float64))


def sequences_all_right(misses: torch.Tensor, asked: torch.Tensor) -> tuple[int, int]:
    """(sequences with a question, those of them whose questions are all answered right), from the
    misses (n,) and the number of labelled positions (n,) of each sequence."""
    scored = asked > 0
    return int(scored.sum()), int((scored & (misses == 0)).sum())


def position_report(
    predictions: torch.Tensor, labels: torch.Tensor, losses: torch.Tensor, sequences: torch.Tensor, num_sequences: int
) -> dict:
    """The metrics of a per-position task as a JSON-ready dict, from one row per labelled position:
    ``predictions`` (N,) the predicted classes, ``labels`` (N,), ``losses`` (N,) the cross-entropy,
    ``sequences`` (N,) the sequence of each row among ``num_sequences``.

    Keys: examples (sequences), positions (labelled positions), accuracy (over the positions), loss
    (their mean cross-entropy), sequences_with_queries, sequence_accuracy (the fraction of those
    whose queries are all right)."""
    hit = predictions == labels
    asked = torch.bincount(sequences, minlength=num_sequences)
    scored, right = sequences_all_right(misses_per_sequence(hit, sequences, num_sequences), asked)
    n = len(labels)
    return {
        "examples": num_sequences,
        "positions": n,
        "accuracy": _ratio(int(hit.sum()), n),
        "loss": float(losses.double().mean()) if n else None,
        "sequences_with_queries": scored,
        "sequence_accuracy": _ratio(right, scored),
    }
