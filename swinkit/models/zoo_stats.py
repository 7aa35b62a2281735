"""Parameters and multiply-accumulates of every registered model at its defaults, shipped as a table
(``zoo_stats.tsv``) so that ``swinkit models`` answers at once: counting them takes about 15 s on two cores.
``tests/test_cli.py`` recounts every row and fails when the table and the models disagree;
``write_table()`` regenerates it after a model is added or changed."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from .flops import count_flops
from .registry import create_model, list_models, model_info

TABLE = Path(__file__).with_name("zoo_stats.tsv")


def count(name: str) -> tuple[int, int]:
    """(parameters, MACs at the default input size) of ``name``, counted on the meta device. A detector's MACs are
    its backbone's and FPN's: what its RPN and RoI heads add depends on the image's proposals (NMS, which the meta
    device cannot run)."""
    with torch.device("meta"):
        model = create_model(name)
    dense = model.backbone if model_info(name).task == "detection" else model
    return sum(p.numel() for p in model.parameters()), count_flops(dense, model.img_size)


@functools.cache
def _table() -> dict[str, tuple[int, int]]:
    rows = (line.split("\t") for line in TABLE.read_text().splitlines()[1:] if line)
    return {name: (int(params), int(macs)) for name, params, macs in rows}


def stats(name: str) -> tuple[int, int]:
    """(parameters, MACs) of ``name`` at its defaults: from the table, or counted for a model it does not list."""
    return _table().get(name) or count(name)


def write_table() -> None:
    lines = ["model\tparams\tmacs"] + [f"{n}\t{p}\t{m}" for n in list_models(task=None) for p, m in [count(n)]]
    TABLE.write_text("\n".join(lines) + "\n")
