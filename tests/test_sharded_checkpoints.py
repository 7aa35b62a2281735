"""Sharded (DCP) checkpoints from elsewhere: no code runs from ``.metadata`` or the shards, declared sizes are bounded
by the files, and a flipped byte is refused (``swinkit.checkpoints.sharded``)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp

import swinkit.engine.checkpoint as ckpt
from swinkit.checkpoints.sharded import CHECKSUMS_FILE, load_sharded, read_metadata, write_checksums
from swinkit.cli import main
from swinkit.core.errors import CheckpointError
from tests.engine_utils import REPO, capped_python, tiny_config
from tests.hostile_files import RunsCode

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


def _sharded_checkpoint(path: Path) -> Path:
    """A real sharded training checkpoint of a tiny model, written in this process as a run writes it."""
    cfg = tiny_config(path.parent / "run")
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    state = {"epoch": 1, "step": 1, "scaler": None, "ema_updates": 0}
    return ckpt.save_sharded_checkpoint(path, cfg, model, None, optimizer, state)


def test_a_saved_sharded_checkpoint_lists_every_file_with_its_checksum(tmp_path):
    shards = _sharded_checkpoint(tmp_path / "last") / ckpt.SHARDS_DIR
    listed = [line.split("  ")[1] for line in (shards / CHECKSUMS_FILE).read_text().splitlines()]
    assert sorted(listed) == sorted(p.name for p in shards.iterdir() if p.name != CHECKSUMS_FILE)
    assert set(ckpt.consolidated_state(shards.parent)) == {"0.weight", "0.bias", "1.weight", "1.bias"}


def test_metadata_that_would_run_code_is_refused_without_running_it(tmp_path, capsys):
    last = _sharded_checkpoint(tmp_path / "last")
    marker = tmp_path / "ran"
    metadata = read_metadata(last / ckpt.SHARDS_DIR)
    metadata.planner_data = RunsCode(f"touch {marker}")  # a valid Metadata with one hostile field
    (last / ckpt.SHARDS_DIR / ".metadata").write_bytes(pickle.dumps(metadata))
    with pytest.raises(CheckpointError, match=r"references posix\.system"):
        ckpt.consolidated_state(last)
    # The CLI commands that read sharded checkpoints give one line and exit 2; nothing ran.
    for argv in (["convert", str(last), str(tmp_path / "out.safetensors")],
                 ["eval", "--checkpoint", str(last)],
                 ["predict", "--checkpoint", str(last), str(REPO / "examples" / "digit-7.png")]):  # fmt: skip
        assert main(argv) == 2, argv
        assert "refused without running anything" in capsys.readouterr().err
    assert not marker.exists()
    # torch's own reader would have run it: the file is a real exploit, not a malformed one.
    dcp.FileSystemReader(last / ckpt.SHARDS_DIR).read_metadata()
    assert marker.exists()


def test_an_optimizer_entry_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "ran"
    shards = tmp_path / "dcp"
    dcp.save({"model": {"w": torch.ones(3)}, "optim": {"lr": RunsCode(f"touch {marker}")}}, checkpoint_id=shards,
             no_dist=True)  # fmt: skip
    write_checksums(shards, write=True)
    with pytest.raises(CheckpointError, match="shards/|dcp"):
        load_sharded({"model": {"w": torch.zeros(3)}, "optim": {"lr": 0.0}}, shards, no_dist=True)
    assert not marker.exists()


def _rewrite_metadata(last: Path, edit) -> None:
    metadata = read_metadata(last / ckpt.SHARDS_DIR)
    edit(metadata)
    (last / ckpt.SHARDS_DIR / ".metadata").write_bytes(pickle.dumps(metadata))


def test_a_tensor_larger_than_the_shards_is_refused_before_allocating_it(tmp_path):
    """A 4 TB tensor in the metadata: refused from the metadata, in a process that could not allocate it."""
    last = _sharded_checkpoint(tmp_path / "last")

    def huge(metadata):
        from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, MetadataIndex

        entry = metadata.state_dict_metadata["model.0.weight"]
        info = metadata.storage_data.pop(MetadataIndex("model.0.weight", entry.chunks[0].offsets))
        entry.size = torch.Size([2**20, 2**20])
        entry.chunks = [ChunkStorageMetadata(torch.Size([0, 0]), entry.size)]
        metadata.storage_data[MetadataIndex("model.0.weight", entry.chunks[0].offsets)] = info

    _rewrite_metadata(last, huge)
    code = ("import sys\nfrom swinkit.engine.checkpoint import consolidated_state\n"
            "from swinkit.core.errors import CheckpointError\n"
            "try:\n    consolidated_state(sys.argv[1])\nexcept CheckpointError as err:\n    print('refused:', err)")
    proc = capped_python(code, str(last), gib=5)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "refused:" in proc.stdout and "declares a chunk of 4398046511104 bytes" in proc.stdout


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "missing", "random", "extra", "symlink",
                                    "metadata_garbage", "metadata_empty", "path_escape"])  # fmt: skip
def test_damaged_shards_are_one_checkpoint_error(tmp_path, damage):
    last = _sharded_checkpoint(tmp_path / "last")
    shards = last / ckpt.SHARDS_DIR
    shard = next(shards.glob("*.distcp"))
    data = shard.read_bytes()
    if damage == "flip":  # the one a size check cannot see
        shard.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    elif damage == "truncate":
        shard.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        shard.write_bytes(b"")
    elif damage == "missing":
        shard.unlink()
    elif damage == "random":
        shard.write_bytes(os.urandom(len(data)))
    elif damage == "extra":
        (shards / "__9_0.distcp").write_bytes(data)
    elif damage == "symlink":  # the same bytes, but read through a link that could lead anywhere
        outside = tmp_path / "outside.distcp"
        shard.rename(outside)
        shard.symlink_to(outside)
    elif damage == "metadata_garbage":
        (shards / ".metadata").write_bytes(os.urandom(300))
    elif damage == "metadata_empty":
        (shards / ".metadata").write_bytes(b"")
    else:
        def escape(metadata):
            for info in metadata.storage_data.values():
                info.relative_path = "../../../../etc/passwd"

        _rewrite_metadata(last, escape)
    with pytest.raises(CheckpointError) as caught:
        ckpt.consolidated_state(last)
    assert str(shards) in str(caught.value)
    assert main(["convert", str(last), str(tmp_path / "out.safetensors")]) == 2
