"""mIoU, mAcc and aAcc as mmseg computes them, against a brute-force count pixel by pixel."""

from __future__ import annotations

import math

import pytest
import torch

from swinkit.engine.miou import IGNORE_INDEX, area_histograms, confusion_matrix, histograms, scores, table


def brute_force(pairs, num_classes):
    """Counts every pixel of every image in Python loops, then mmseg's formulas."""
    inter, pred_area, label_area = [0] * num_classes, [0] * num_classes, [0] * num_classes
    for prediction, label in pairs:
        for p, t in zip(prediction.flatten().tolist(), label.flatten().tolist(), strict=True):
            if t == IGNORE_INDEX:
                continue
            pred_area[p] += 1
            label_area[t] += 1
            inter[p] += p == t
    ious = [i / (pa + la - i) for i, pa, la in zip(inter, pred_area, label_area, strict=True) if pa + la - i > 0]
    accs = [i / la for i, la in zip(inter, label_area, strict=True) if la > 0]
    return 100 * sum(ious) / len(ious), 100 * sum(accs) / len(accs), 100 * sum(inter) / sum(label_area), inter


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_equal_a_pixel_by_pixel_count(seed):
    g = torch.Generator().manual_seed(seed)
    num_classes = 7
    pairs = []
    for h, w in [(9, 13), (16, 5), (11, 11)]:  # images of different sizes weigh by their area
        label = torch.randint(0, 5, (h, w), generator=g)  # classes 5 and 6 never labelled
        label[torch.rand(h, w, generator=g) < 0.2] = IGNORE_INDEX
        prediction = torch.randint(0, 6, (h, w), generator=g)  # class 6 never predicted: absent, NaN, left out
        pairs.append((prediction, label))
    total = sum(area_histograms(p, t, num_classes) for p, t in pairs)
    result = scores(total)
    miou, macc, aacc, inter = brute_force(pairs, num_classes)
    assert result["mIoU"] == pytest.approx(miou, abs=1e-9)
    assert result["mAcc"] == pytest.approx(macc, abs=1e-9)
    assert result["aAcc"] == pytest.approx(aacc, abs=1e-9)
    assert math.isnan(result["per_class"][6]["IoU"]) and math.isnan(result["per_class"][5]["Acc"])
    assert result["per_class"][5]["IoU"] == 0.0  # predicted but never labelled: a union, no intersection
    assert total[0].tolist() == inter
    confusion = sum(confusion_matrix(p, t, num_classes) for p, t in pairs)
    counted = [[0] * num_classes for _ in range(num_classes)]
    for prediction, label in pairs:
        for p, t in zip(prediction.flatten().tolist(), label.flatten().tolist(), strict=True):
            if t != IGNORE_INDEX:
                counted[t][p] += 1
    assert confusion.tolist() == counted and torch.equal(histograms(confusion), total)


def test_labels_outside_the_classes_are_refused_and_the_table_prints():
    with pytest.raises(ValueError, match="labels outside"):
        area_histograms(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), 9), 3)
    result = scores(area_histograms(torch.tensor([[0, 1]]), torch.tensor([[0, 0]]), 3), ["sky", "road", "car"])
    text = table(result)
    assert "sky" in text and "nan" in text and text.endswith("aAcc 50.00")
