"""The built-in digit scenes: fixed, consistent between label map and instances, and made of split-disjoint digits."""

from __future__ import annotations

import numpy as np
import pytest

from swinkit.data.digit_scenes import CLASSES, DigitScenes


def test_scenes_are_fixed_and_sized():
    scenes = DigitScenes("train", length=20, size=64)
    image, labels, _ = scenes.scene(7)
    again, labels_again, _ = DigitScenes("train", length=20, size=64).scene(7)
    assert image.size == (64, 64) and image.mode == "RGB" and labels.shape == (64, 64)
    assert np.array_equal(np.asarray(image), np.asarray(again)) and np.array_equal(labels, labels_again)
    assert not np.array_equal(np.asarray(image), np.asarray(DigitScenes("val", length=20).load(7)[0]))
    with pytest.raises(IndexError):
        scenes.scene(20)


def test_label_map_and_instances_agree():
    scenes = DigitScenes("val", length=40)
    seen = set()
    for i in range(len(scenes)):
        _, labels, instances = scenes.scene(i)
        assert labels.max() < len(CLASSES)
        rebuilt = np.zeros_like(labels)
        for instance in instances:
            assert not (rebuilt[instance.mask] != 0).any()  # visible masks do not overlap
            rebuilt[instance.mask] = instance.label
            rows, cols = np.nonzero(instance.mask)
            assert instance.box == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
            seen.add(instance.label)
        assert np.array_equal(rebuilt, labels)
        assert 0.0 < (labels > 0).mean() < 0.6  # some ink, mostly background
    assert seen == set(range(1, 11))  # every digit class appears in 40 scenes


def test_training_and_validation_scenes_use_disjoint_digits():
    train, val = DigitScenes("train"), DigitScenes("val")
    assert len(train) == 1000 and len(val) == 200
    assert len(train.digits) == 1437 and len(val.digits) == 360  # the classification split, made disjoint there
