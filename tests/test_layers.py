"""Window geometry, partition, shift/padding masks and relative positions against brute-force constructions."""

from __future__ import annotations

import math

import pytest
import torch
from timm.models.swin_transformer_v2 import WindowAttention as TimmWindowAttentionV2

from swinkit.layers import WindowGeometry, window_geometry, window_partition, window_reverse
from swinkit.layers.relative_position import log_spaced_coords, relative_position_index
from swinkit.layers.window import attention_mask


@pytest.mark.parametrize("size, window", [((8, 12), (4, 4)), ((12, 15), (4, 5)), ((6, 6), (6, 6)), ((9, 4), (3, 2))])
def test_window_partition_reverse_round_trip(size, window):
    h, w = size
    x = torch.randn(2, h, w, 5)
    windows = window_partition(x, window)
    wh, ww = window
    assert windows.shape == (2 * (h // wh) * (w // ww), wh * ww, 5)
    # Windows run row-major over the map, image by image; tokens run row-major inside a window.
    per_row = w // ww
    for index in (0, 1, windows.shape[0] - 1):
        b, rest = divmod(index, (h // wh) * per_row)
        r, c = divmod(rest, per_row)
        expected = x[b, r * wh : (r + 1) * wh, c * ww : (c + 1) * ww].reshape(wh * ww, 5)
        assert torch.equal(windows[index], expected)
    assert torch.equal(window_reverse(windows, window, h, w), x)


def official_shift_mask(hp: int, wp: int, window: tuple[int, int], shift: tuple[int, int]) -> torch.Tensor:
    """The official Swin construction on a (padded) map: three h and w slices, region ids, -100 across regions."""
    (wh, ww), (sh, sw) = window, shift
    img_mask = torch.zeros((1, hp, wp, 1))
    h_slices = (slice(0, -wh), slice(-wh, -sh), slice(-sh, None))
    w_slices = (slice(0, -ww), slice(-ww, -sw), slice(-sw, None))
    cnt = 0
    for hs in h_slices:
        for ws in w_slices:
            img_mask[:, hs, ws, :] = cnt
            cnt += 1
    mask_windows = window_partition(img_mask, window).view(-1, wh * ww)
    mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def padded_keys(geometry: WindowGeometry) -> torch.Tensor:
    """(nW, N) bool: which window slots hold padding, from each slot's original (unshifted) coordinates."""
    hp, wp = geometry.padded_size
    (wh, ww), (sh, sw) = geometry.window, geometry.shift
    rows = []
    for r in range(hp // wh):
        for c in range(wp // ww):
            slots = []
            for i in range(wh):
                for j in range(ww):
                    y, x = (r * wh + i + sh) % hp, (c * ww + j + sw) % wp  # undo the cyclic shift by -shift
                    slots.append(y >= geometry.height or x >= geometry.width)
            rows.append(slots)
    return torch.tensor(rows)


@pytest.mark.parametrize(
    "height, width, window, shift",
    [
        (8, 8, (4, 4), (2, 2)),  # official square case, no padding
        (14, 14, (7, 7), (3, 3)),
        (12, 18, (4, 6), (2, 3)),  # non-square window, no padding
        (12, 12, (6, 4), (3, 2)),
        (16, 12, (8, 4), (4, 1)),  # uneven shift
    ],
)
def test_shift_mask_equals_official_construction(height, width, window, shift):
    geometry = WindowGeometry(height, width, window, shift)
    assert not geometry.needs_padding
    mask = attention_mask(geometry, torch.device("cpu"))
    expected = official_shift_mask(height, width, window, shift)
    assert mask.shape == expected.shape == (geometry.num_windows, window[0] * window[1], window[0] * window[1])
    assert torch.equal(mask, expected)
    assert (mask == -100).any() and (mask == 0).any()


@pytest.mark.parametrize(
    "height, width, window, shift",
    [
        (13, 11, (4, 4), (2, 2)),
        (13, 11, (4, 4), (0, 0)),
        (10, 7, (4, 6), (2, 3)),
        (7, 10, (3, 4), (0, 2)),
        (5, 9, (5, 4), (0, 0)),  # padding on one side only
    ],
)
def test_padded_mask_is_official_shift_mask_plus_masked_padding(height, width, window, shift):
    geometry = WindowGeometry(height, width, window, shift)
    assert geometry.needs_padding
    hp, wp = geometry.padded_size
    assert hp % window[0] == 0 and wp % window[1] == 0 and hp - height < window[0] and wp - width < window[1]
    mask = attention_mask(geometry, torch.device("cpu"))

    n = window[0] * window[1]
    # Shift labels live on the padded, shifted map.
    shift_mask = official_shift_mask(hp, wp, window, shift) if any(shift) else torch.zeros(geometry.num_windows, n, n)
    pad = padded_keys(geometry)[:, None, :].expand(-1, n, -1)  # (nW, Nq, Nk): key is padding
    diagonal = torch.eye(n, dtype=torch.bool).expand_as(pad)
    assert pad.any()

    hidden = pad & ~diagonal
    assert torch.all(mask[hidden] == float("-inf"))
    # A padded query still sees itself, so no softmax row is empty; everything else is the official shift mask.
    assert torch.equal(mask[~hidden], shift_mask[~hidden])
    assert torch.equal(mask.diagonal(dim1=-2, dim2=-1), torch.zeros(geometry.num_windows, n))


def test_no_mask_without_shift_or_padding():
    assert attention_mask(WindowGeometry(8, 12, (4, 4), (0, 0)), torch.device("cpu")) is None


@pytest.mark.parametrize(
    "height, width, window, shifted, expected_window, expected_shift",
    [
        (56, 56, 7, True, (7, 7), (3, 3)),
        (56, 56, 7, False, (7, 7), (0, 0)),
        (8, 8, 8, True, (8, 8), (0, 0)),  # equal: clamped, shift dropped
        (7, 7, 8, True, (7, 7), (0, 0)),  # smaller than the window
        (6, 10, 8, True, (6, 6), (0, 0)),  # the smaller side decides, for both sides
        (10, 6, 7, True, (6, 6), (0, 0)),
        (9, 30, 8, True, (8, 8), (4, 4)),  # 9 > 8: a regular, padded geometry
        (2, 2, 12, True, (2, 2), (0, 0)),
        (13, 11, (4, 6), True, (4, 6), (2, 3)),  # non-square, not clamped
        (5, 20, (6, 8), True, (5, 5), (0, 0)),  # non-square, clamped at the map's smaller side
    ],
)
def test_window_geometry_follows_official_clamp(height, width, window, shifted, expected_window, expected_shift):
    window = (window, window) if isinstance(window, int) else window
    geometry = window_geometry(height, width, window, shifted)
    assert (geometry.height, geometry.width) == (height, width)
    assert geometry.window == expected_window
    assert geometry.shift == expected_shift


def official_clamp(height: int, width: int, window: int, shifted: bool) -> tuple[tuple[int, int], tuple[int, int]]:
    """Official SwinTransformerBlock.__init__: if min(input_resolution) <= window_size, no shift and window=min."""
    if min(height, width) <= window:
        return (min(height, width),) * 2, (0, 0)
    return (window, window), ((window // 2,) * 2 if shifted else (0, 0))


@pytest.mark.parametrize("window", [4, 7, 8, 12])
def test_window_geometry_matches_official_rule_on_a_grid(window):
    for height in range(1, 20):
        for width in range(1, 20):
            for shifted in (False, True):
                geometry = window_geometry(height, width, (window, window), shifted)
                assert (geometry.window, geometry.shift) == official_clamp(height, width, window, shifted)


@pytest.mark.parametrize(
    "window, table_window", [((4, 4), None), ((3, 5), None), ((7, 7), None), ((3, 3), (7, 7)), ((2, 4), (4, 6))]
)
def test_relative_position_index_against_loop(window, table_window):
    th, tw = table_window or window
    index = relative_position_index(window, table_window)
    wh, ww = window
    n = wh * ww
    assert index.shape == (n, n)
    for q in range(n):
        qi, qj = divmod(q, ww)
        for k in range(n):
            ki, kj = divmod(k, ww)
            assert index[q, k] == (qi - ki + th - 1) * (2 * tw - 1) + (qj - kj + tw - 1)
    assert index.min() >= 0 and index.max() < (2 * th - 1) * (2 * tw - 1)
    if table_window is None:
        assert len(index.unique()) == (2 * wh - 1) * (2 * ww - 1)  # every table entry is used


def reference_log_coord(offset: int, window: int, pretrained: int) -> float:
    """REFERENCE.md: offset / (pretrained - 1) if pretrained > 0 else / (window - 1); *8; sign*log2(|x|+1)/log2(8)."""
    span = pretrained - 1 if pretrained > 0 else window - 1
    if span == 0:  # the window-size-1 guard: the only offset is 0
        assert offset == 0
        return 0.0
    x = offset / span * 8
    return math.copysign(math.log2(abs(x) + 1) / math.log2(8), x) if x else 0.0


@pytest.mark.parametrize(
    "window, pretrained",
    [
        ((8, 8), (0, 0)),
        ((16, 16), (12, 12)),
        ((24, 24), (12, 12)),
        ((6, 10), (0, 0)),
        ((1, 4), (0, 0)),
        ((1, 1), (0, 0)),
    ],
)
def test_log_spaced_coords_against_formula(window, pretrained):
    table = log_spaced_coords(window, pretrained)
    wh, ww = window
    assert table.shape == (2 * wh - 1, 2 * ww - 1, 2)
    assert torch.isfinite(table).all()
    for a in range(2 * wh - 1):
        for b in range(2 * ww - 1):
            dh, dw = a - (wh - 1), b - (ww - 1)
            expected = (reference_log_coord(dh, wh, pretrained[0]), reference_log_coord(dw, ww, pretrained[1]))
            assert table[a, b].tolist() == pytest.approx(expected, abs=1e-6)
    if pretrained[0] > 0 and window[0] > pretrained[0]:
        # Transferred to a larger window: offsets beyond the pretrained range extrapolate past 1.
        assert table[..., 0].abs().max() > math.log2(9) / 3
    elif wh > 1:
        assert table[..., 0].abs().max() == pytest.approx(math.log2(9) / 3)  # the largest offset maps to 8


@pytest.mark.parametrize("window, pretrained", [((8, 8), (0, 0)), ((16, 16), (12, 12)), ((4, 6), (0, 0))])
def test_log_spaced_coords_and_index_match_timm(window, pretrained):
    peer = TimmWindowAttentionV2(dim=8, window_size=window, num_heads=2, pretrained_window_size=pretrained)
    assert torch.allclose(log_spaced_coords(window, pretrained), peer.relative_coords_table[0], atol=1e-6)
    assert torch.equal(relative_position_index(window), peer.relative_position_index)
