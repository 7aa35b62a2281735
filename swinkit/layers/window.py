"""Shifted-window machinery shared by Swin V1 and V2: geometry, partition, masks.

A feature map of any size goes through the same path: the official clamping rule picks the window and shift for
the map, the map is padded on the bottom/right to a window multiple, and padded tokens are masked out of attention
as keys. When no padding is needed the mask is exactly the official shift mask, so the result is identical to the
fixed-size implementations.

The official dense-task backbones (Swin-Transformer-Semantic-Segmentation and -Object-Detection, mmseg's and mmdet's
Swin, HF's ``SwinBackbone``, which partitions always) follow another rule, ``visible_padding``: windows are never
clamped, every odd block shifts by half a window, and the padded positions are zero tokens that every query of their
window attends to. Their weights were trained that way, so a segmentation or detection model uses it
(``HierarchicalModel.set_window_padding``); with no padding and maps larger than the window the two rules agree.

While ``torch.export`` traces a model with a dynamic image size, the sizes are symbolic and every Python decision
on them would be frozen into the graph. The geometry is then *symbolic*: the window is the configured one (the map
must be at least that large, checked), and padding, the shift (dropped where the map's smaller side equals the
window, as the clamping rule says), the window order and the masks are computed by tensor operations on the sizes,
so one graph is right for every size in its range.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function
from torch._guards import active_fake_mode

from ..core.errors import ConfigError

# The official Swin code separates shifted-window regions with -100, not -inf; keep it for parity.
SHIFT_MASK_VALUE = -100.0


@dataclass(frozen=True)
class WindowGeometry:
    """How one stage's feature map is cut into windows.

    Attributes:
        height, width: the real feature map size.
        window: (wh, ww) after clamping.
        shift: (sh, sw) cyclic shift, zero for regular blocks and for clamped windows.
        symbolic: the sizes are symbolic (``torch.export`` with a dynamic size); ``shift`` is then the shift of an
            unclamped map, applied only where the map's smaller side exceeds the window (always with
            ``visible_padding``).
        visible_padding: padded positions are zero tokens seen as keys (the dense-task rule, see the module
            docstring) rather than masked out.
    """

    height: int
    width: int
    window: tuple[int, int]
    shift: tuple[int, int]
    symbolic: bool = False
    visible_padding: bool = False

    @property
    def grid(self) -> tuple[int, int]:
        """Windows along each side of the padded map."""
        wh, ww = self.window
        return (self.height + wh - 1) // wh, (self.width + ww - 1) // ww

    @property
    def padded_size(self) -> tuple[int, int]:
        (nh, nw), (wh, ww) = self.grid, self.window
        return nh * wh, nw * ww

    @property
    def needs_padding(self) -> bool:
        return self.padded_size != (self.height, self.width)

    @property
    def num_windows(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def needs_mask(self) -> bool:
        return any(self.shift) or (self.needs_padding and not self.visible_padding)


def to_2tuple(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ConfigError(f"expected an int or a pair of ints, got {value}")
    return value


def window_geometry(height: int, width: int, window: tuple[int, int], shifted: bool,
                    visible_padding: bool = False) -> WindowGeometry:  # fmt: skip
    """Apply the official clamping rule to a feature map (none with ``visible_padding``: module docstring).

    Official Swin (and HF) clamp when ``min(H, W) <= window``: the window becomes the smaller map side and the
    shift is dropped. With a non-square window the rule compares against the smaller window side and caps each side
    at the map's smaller side, which reduces to the official rule for square windows. Sizes that are symbolic
    (a dynamic-size export) give a symbolic geometry: see the module docstring.
    """
    shift = (window[0] // 2, window[1] // 2) if shifted else (0, 0)
    if exporting_dynamic_size(height, width):
        return WindowGeometry(height, width, window, shift, symbolic=True, visible_padding=visible_padding)
    if visible_padding:
        return WindowGeometry(height, width, window, shift, visible_padding=True)
    smallest = min(height, width)
    if smallest <= min(window):
        window = (min(window[0], smallest), min(window[1], smallest))
        return WindowGeometry(height, width, window, (0, 0))
    return WindowGeometry(height, width, window, shift)


def exporting_dynamic_size(*sizes) -> bool:
    """True while ``torch.export`` traces with a symbolic image size (see the module docstring)."""
    return torch.compiler.is_exporting() and any(isinstance(size, torch.SymInt) for size in sizes)


def window_partition(x: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """(B, H, W, C) -> (B * num_windows, wh * ww, C); H and W must be window multiples."""
    b, h, w, c = x.shape
    wh, ww = window
    x = x.view(b, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh * ww, c)


def window_reverse(windows: torch.Tensor, window: tuple[int, int], height: int, width: int) -> torch.Tensor:
    """(B * num_windows, wh * ww, C) -> (B, H, W, C)."""
    wh, ww = window
    c = windows.shape[-1]
    x = windows.view(-1, height // wh, width // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, height, width, c)


def geometry_cache(fn):
    """``functools.lru_cache`` for the derived tables (index, coordinates, masks), bypassed while tracing.

    While ``torch.export`` traces a model (or ``swinkit plan`` runs it on fake tensors) the tensors built here are
    fake, and a cached one would be handed to every later eager call; ``torch.jit.trace`` records the ops of a miss
    but not of a hit, so its check run would see a different graph.
    """
    cached = functools.lru_cache(maxsize=64)(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if torch.compiler.is_compiling() or torch.jit.is_tracing() or active_fake_mode() is not None:
            return fn(*args, **kwargs)
        # A table first built under torch.inference_mode() would be an inference tensor, which a later training
        # step could not save for backward: cached tables are always ordinary tensors.
        with torch.inference_mode(False):
            return cached(*args, **kwargs)

    wrapper.cache_info, wrapper.cache_clear = cached.cache_info, cached.cache_clear
    return wrapper


def _region_ids(size: int, window: int, shift: int) -> torch.Tensor:
    # The official three slices (0, -ws), (-ws, -shift), (-shift, None).
    ids = torch.zeros(size, dtype=torch.long)
    if shift:
        ids[size - window : size - shift] = 1
        ids[size - shift :] = 2
    return ids


@geometry_cache
def _attention_mask_cpu(geometry: WindowGeometry) -> torch.Tensor | None:
    if not geometry.needs_mask:
        return None
    hp, wp = geometry.padded_size
    (wh, ww), (sh, sw) = geometry.window, geometry.shift
    region = _region_ids(hp, wh, sh)[:, None] * 3 + _region_ids(wp, ww, sw)[None, :]
    padded = (torch.arange(hp)[:, None] >= geometry.height) | (torch.arange(wp)[None, :] >= geometry.width)
    # Regions are labelled in the shifted frame (as officially); padding is known in the unshifted one.
    padded = torch.roll(padded, shifts=(-sh, -sw), dims=(0, 1))
    region = window_partition(region[None, :, :, None], geometry.window).squeeze(-1)  # (nW, N)
    padded = window_partition(padded[None, :, :, None], geometry.window).squeeze(-1)  # (nW, N)
    mask = torch.zeros(region.shape[0], region.shape[1], region.shape[1])
    mask.masked_fill_(region[:, :, None] != region[:, None, :], SHIFT_MASK_VALUE)
    if geometry.visible_padding:
        return mask
    # A padded key is invisible to every query but itself; a padded query therefore never has an empty row,
    # which would turn the softmax (and its gradient) into NaN.
    own = torch.eye(region.shape[1], dtype=torch.bool)
    mask.masked_fill_(padded[:, None, :] & ~own, float("-inf"))
    return mask


def attention_mask(geometry: WindowGeometry, device: torch.device) -> torch.Tensor | None:
    """Additive mask (num_windows, N, N) for shifted regions and padded keys, or None when nothing is masked."""
    if geometry.symbolic:
        return _symbolic_attention_mask(geometry, device)
    mask = _attention_mask_cpu(geometry)
    return None if mask is None else mask.to(device)


@geometry_cache
def _shifted_window_order(geometry: WindowGeometry, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of the flattened padded map in shifted-window order, and the inverse permutation."""
    hp, wp = geometry.padded_size
    positions = torch.arange(hp * wp).view(1, hp, wp, 1)
    order = window_partition(
        torch.roll(positions, shifts=tuple(-s for s in geometry.shift), dims=(1, 2)), geometry.window
    )
    order = order.reshape(-1)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel())
    return order.to(device), inverse.to(device)


def shifted_window_attention(x: torch.Tensor, geometry: WindowGeometry, attend) -> torch.Tensor:
    """Pad, shift, partition, ``attend`` per window, and undo it all.

    A shifted geometry takes the cyclic shift and the partition (and their inverses) in one indexed gather each,
    instead of a ``torch.roll`` copy followed by a partition copy.

    Args:
        x: (B, H, W, C) feature map.
        geometry: the stage's window geometry for this map.
        attend: callable taking (B * num_windows, N, C) windows and the geometry, returning the same shape.

    Returns:
        (B, H, W, C) attention output for the real tokens.
    """
    if geometry.symbolic:
        return _symbolic_window_attention(x, geometry, attend)
    b, c = x.shape[0], x.shape[3]
    h, w = geometry.height, geometry.width
    hp, wp = geometry.padded_size
    n = geometry.window[0] * geometry.window[1]
    if geometry.needs_padding:
        x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
    if any(geometry.shift):
        order, inverse = _shifted_window_order(geometry, x.device)
        windows = attend(torch.index_select(x.reshape(b, hp * wp, c), 1, order).view(-1, n, c), geometry)
        x = torch.index_select(windows.reshape(b, hp * wp, c), 1, inverse).view(b, hp, wp, c)
    else:
        x = window_reverse(attend(window_partition(x, geometry.window), geometry), geometry.window, hp, wp)
    if geometry.needs_padding:
        x = x[:, :h, :w, :].contiguous()
    return x


@register_notrace_function  # and torch.fx.wrap'd by name where the blocks call it: fx patches the caller's globals
def window_attention(x: torch.Tensor, attend, window_size: tuple[int, int], shifted: bool,
                     visible_padding: bool = False) -> torch.Tensor:  # fmt: skip
    """``shifted_window_attention`` of a block's (B, H, W, C) map, its geometry decided by the map's own size
    (the official clamping rule, or the dense-task rule with ``visible_padding``). An fx leaf (``layers.tracing``):
    a traced graph decides it per input too."""
    geometry = window_geometry(x.shape[1], x.shape[2], window_size, shifted, visible_padding)
    return shifted_window_attention(x, geometry, attend)


# --- symbolic sizes: the same geometry by tensor operations (torch.export with a dynamic image size) ---------------
# Nothing is padded: the gather into window order reads every padded position from token 0, the mask hides those
# positions as keys, and the gather back reads only real tokens (with visible padding they read a zero token
# appended to the map, and nothing hides them). Every index is computed by broadcast arithmetic from
# aranges, with no view of a symbolic size, so that no shape check freezes a size of the example (a one-window stage
# at 256 px, two windows at 320) into the graph.


def _symbolic_sizes(geometry: WindowGeometry, device: torch.device) -> tuple[torch.Tensor, ...]:
    """The map's height, width and window grid as 0-d tensors: ONNX takes arithmetic between tensors, not with a
    symbolic Python number."""
    sizes = (geometry.height, geometry.width, *geometry.grid)
    return tuple(torch.scalar_tensor(size, dtype=torch.long, device=device) for size in sizes)


def _symbolic_positions(geometry: WindowGeometry, device: torch.device):
    """Each window position's source row and column (num_windows, N), whether it is a real token, and the shift.

    The shift is a tensor, (smallest side > window) * shift, so that the clamping rule's dropped shift at a map equal
    to the window is decided by the graph rather than frozen into it (visible padding never drops it).
    """
    (wh, ww), (sh, sw) = geometry.window, geometry.shift
    h, w, nh, nw = _symbolic_sizes(geometry, device)
    active = torch.ones_like(h) if geometry.visible_padding else (torch.minimum(h, w) > min(geometry.window)).long()
    shift = (active * sh, active * sw)
    window = torch.arange(geometry.num_windows, device=device)[:, None]
    token = torch.arange(wh * ww, device=device)[None, :]
    row = torch.remainder(torch.div(window, nw, rounding_mode="floor") * wh + token // ww + shift[0], nh * wh)
    col = torch.remainder(torch.remainder(window, nw) * ww + token % ww + shift[1], nw * ww)
    return row, col, (row < h) & (col < w), shift


def _symbolic_window_order(geometry: WindowGeometry, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token read by each window position (padding reads token 0, or with visible padding the zero token appended
    after the map's H * W), and each real token's position among the windows."""
    wh, ww = geometry.window
    h, w, nh, nw = _symbolic_sizes(geometry, device)
    row, col, real, (sh, sw) = _symbolic_positions(geometry, device)
    order = torch.where(real, row * w + col, h * w if geometry.visible_padding else 0).flatten()
    row = torch.remainder(torch.arange(geometry.height, device=device)[:, None] - sh, nh * wh)
    col = torch.remainder(torch.arange(geometry.width, device=device)[None, :] - sw, nw * ww)
    inverse = ((row // wh) * nw + col // ww) * (wh * ww) + (row % wh) * ww + col % ww
    return order, inverse.flatten()


def _symbolic_attention_mask(geometry: WindowGeometry, device: torch.device) -> torch.Tensor:
    wh, ww = geometry.window
    _, _, nh, nw = _symbolic_sizes(geometry, device)
    row, col, real, (sh, sw) = _symbolic_positions(geometry, device)
    # Regions in the shifted frame, as the official slices (0, -window), (-window, -shift), (-shift, None) label them.
    hp, wp = nh * wh, nw * ww
    shifted_row, shifted_col = torch.remainder(row - sh, hp), torch.remainder(col - sw, wp)
    region = ((shifted_row >= hp - wh).long() + (shifted_row >= hp - sh).long()) * 3
    region = region + (shifted_col >= wp - ww).long() + (shifted_col >= wp - sw).long()
    mask = torch.where(region[:, :, None] != region[:, None, :], SHIFT_MASK_VALUE, 0.0)
    if geometry.visible_padding:
        return mask
    own = torch.eye(wh * ww, dtype=torch.bool, device=device)
    return mask.masked_fill(~real[:, None, :] & ~own, float("-inf"))


def _symbolic_window_attention(x: torch.Tensor, geometry: WindowGeometry, attend) -> torch.Tensor:
    b, h, w, c = x.shape
    n = geometry.window[0] * geometry.window[1]
    order, inverse = _symbolic_window_order(geometry, x.device)
    tokens = x.reshape(b, h * w, c)
    if geometry.visible_padding:
        tokens = torch.cat([tokens, tokens.new_zeros(b, 1, c)], dim=1)
    windows = torch.index_select(tokens, 1, order).view(b * geometry.num_windows, n, c)
    windows = attend(windows, geometry).view(b, geometry.num_windows * n, c)
    return torch.index_select(windows, 1, inverse).view(b, h, w, c)
