"""The `swinkit` command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

import swinkit
from swinkit.cli import main


def test_models_lists_every_model_with_params(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in swinkit.list_models():
        assert name in out
    line = next(row for row in out.splitlines() if row.startswith("swinv2_tiny_window8_256 "))
    assert line.split()[1:6] == ["28.35", "5.94", "256", "1000", "81.8"]


def test_the_shipped_model_statistics_are_what_the_models_count():
    from swinkit.models import zoo_stats

    recounted = {name: zoo_stats.count(name) for name in swinkit.list_models(task=None)}
    assert {name: zoo_stats.stats(name) for name in recounted} == recounted, (
        "swinkit/models/zoo_stats.tsv is stale: regenerate it with "
        "python -c 'from swinkit.models.zoo_stats import write_table; write_table()'"
    )


def test_segmentation_models_and_their_tags_list_with_their_miou(capsys):
    assert main(["models", "--task", "segmentation"]) == 0
    line = next(row for row in capsys.readouterr().out.splitlines() if row.startswith("upernet_swin_tiny"))
    assert line.split()[1:6] == ["59.94", "236.87", "512", "150", "44.51"]
    assert main(["models", "upernet_swin_base*", "--task", "segmentation", "--pretrained"]) == 0
    out = capsys.readouterr().out
    assert "mIoU" in out.splitlines()[0]
    assert "48.13" in next(row for row in out.splitlines() if ".ade20k " in row)
    assert "hf-hub:openmmlab/upernet-swin-base" in out


def test_models_pattern_and_no_match(capsys):
    assert main(["models", "swin_tiny*"]) == 0
    assert capsys.readouterr().out.count("\n") == 2
    assert main(["models", "resnet*"]) == 1


def test_python_dash_m():
    out = subprocess.run(
        [sys.executable, "-m", "swinkit", "models", "swinv2_base_window12to16*"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "swinv2_base_patch4_window12to16_192to256_22kto1k_ft" in out


def test_help_and_import_do_not_load_torch():
    script = (
        "import sys\n"
        "import swinkit\n"
        "from swinkit.cli import main\n"
        "for argv in (['--help'], ['convert', '--help'], ['eval', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code == 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert swinkit.create_model is swinkit.hub.create_model and 'torch' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "--from {auto,swinkit,timm,microsoft,hf,torchvision,mindspore,paddle,openmmlab,mmseg,mmdet}" in done.stdout
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        swinkit.nonexistent  # noqa: B018
