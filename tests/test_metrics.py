"""Evaluation metrics against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from hrrformer.metrics import (
    classification_report,
    confusion_matrix,
    detection_rate_at_fpr,
    per_class_scores,
    roc_auc,
)


def test_confusion_and_per_class_scores_by_hand():
    confusion = confusion_matrix([0, 0, 0, 1, 1, 2], [0, 1, 0, 1, 1, 0], 3)
    assert confusion.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    scores = per_class_scores(confusion, ["a", "b", "c"])
    assert scores["a"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert scores["b"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert scores["c"] == {"precision": None, "recall": 0.0, "f1": None, "support": 1}  # never predicted
    assert per_class_scores(confusion_matrix([0], [1], 2), ["x", "y"])["x"]["f1"] is None  # y: precision 0
    assert per_class_scores(confusion_matrix([0, 1], [1, 0], 2), ["x", "y"])["x"]["f1"] == 0.0


def test_roc_auc_by_hand_with_ties():
    # positives 0.35 and 0.8 against negatives 0.1 and 0.4: 3 of 4 pairs ordered right
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == pytest.approx(0.75)
    # a tie counts one half: (0.5 + 1) / 2
    assert roc_auc([0.5, 0.5, 0.2], [True, False, False]) == pytest.approx(0.75)
    assert roc_auc([0.9, 0.1], [False, True]) == 0.0
    assert roc_auc([0.2, 0.3], [True, True]) is None


def test_detection_rate_at_fixed_false_positive_rates_by_hand():
    negatives = [i / 1000 for i in range(1000)]  # 0.000 … 0.999
    positives = [0.9995, 0.9985, 0.9975, 0.5]
    scores, is_positive = negatives + positives, [False] * 1000 + [True] * 4
    at_1 = detection_rate_at_fpr(scores, is_positive, 0.01)
    # at most 10 negatives may score above the threshold: the 11th largest, 0.989
    assert at_1 == pytest.approx({"detection_rate": 0.75, "threshold": 0.989, "false_positive_rate": 0.01})
    at_01 = detection_rate_at_fpr(scores, is_positive, 0.001)
    assert at_01 == pytest.approx({"detection_rate": 0.5, "threshold": 0.998, "false_positive_rate": 0.001})
    few = detection_rate_at_fpr([0.1, 0.7, 0.6, 0.9], [False, False, True, True], 0.01)
    assert few == pytest.approx({"detection_rate": 0.5, "threshold": 0.7, "false_positive_rate": 0.0})
    assert detection_rate_at_fpr([0.1, 0.2], [False, False], 0.01) is None


def test_classification_report_two_classes():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 3.0]])
    labels = torch.tensor([0, 0, 1, 1])
    report = classification_report(logits, labels, ["benign", "malicious"])
    assert report["examples"] == 4 and report["accuracy"] == 0.5
    assert report["confusion_matrix"] == [[1, 1], [1, 1]] and report["class_names"] == ["benign", "malicious"]
    # cross-entropy of each row: log(1 + e^(other logit − own logit))
    expected_loss = (math.log1p(math.exp(-2)) + 2 * math.log1p(math.e) + math.log1p(math.exp(-3))) / 4
    assert report["loss"] == pytest.approx(expected_loss, rel=1e-6)
    # P(malicious): 0.12, 0.73, 0.27, 0.95 → positives 0.27, 0.95 against 0.12, 0.73: 3 of 4 pairs
    assert report["positive_class"] == "malicious" and report["roc_auc"] == pytest.approx(0.75)
    assert set(report["detection_rate_at_fpr"]) == {"0.01", "0.001"}
    assert report["detection_rate_at_fpr"]["0.01"]["detection_rate"] == 0.5  # only 0.95 beats 0.73
    assert report["per_class"]["malicious"]["recall"] == 0.5


def test_classification_report_many_classes_has_no_two_class_metrics():
    report = classification_report(torch.eye(3), torch.tensor([0, 1, 1]), ["a", "b", "c"])
    assert report["accuracy"] == pytest.approx(2 / 3) and "roc_auc" not in report
    assert report["per_class"]["c"] == {"precision": 0.0, "recall": None, "f1": None, "support": 0}
