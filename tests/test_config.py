"""The config schema: shipped recipes and the seed configs validate; bad keys and types fail clearly."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from swinkit.cli import main
from swinkit.engine.config import (
    FLAT_KEYS,
    IGNORED_FLAT_KEYS,
    ConfigError,
    apply_overrides,
    check_schedule,
    config_from_dict,
    list_configs,
    load_config,
    to_dict,
)
from tests.engine_utils import REPO, capped_python

SEED_DIR = Path(__file__).resolve().parents[2] / "shared" / "seed-configs"
SEEDS = sorted(SEED_DIR.glob("*.yaml")) if SEED_DIR.is_dir() else []
REQUIRED = {"quickstart", "swinv2_tiny_window8_256", "swinv2_base_window12to16_192to256_22kto1k_ft",
            "swin_tiny_patch4_window7_224"}  # fmt: skip


def test_required_recipes_are_shipped():
    assert set(list_configs()) >= REQUIRED


@pytest.mark.parametrize("name", list_configs())
def test_shipped_recipe_validates_and_round_trips(name):
    cfg = load_config(name)
    assert cfg.name == name
    assert config_from_dict(to_dict(cfg)) == cfg


def test_default_is_quickstart():
    assert load_config().name == "quickstart"


@pytest.mark.skipif(not SEEDS, reason="seed configs not found beside the repository")
@pytest.mark.parametrize("path", SEEDS, ids=lambda p: p.stem)
def test_seed_config_validates_and_lists_ignored_keys(path, caplog):
    with caplog.at_level(logging.WARNING):
        cfg = load_config(str(path))
    warnings = [r.getMessage() for r in caplog.records if "ignoring keys" in r.getMessage()]
    assert len(warnings) == 1
    assert "device_target" in warnings[0] and "keep_bn_fp32" in warnings[0]
    assert cfg.optim.lr_base_batch is None  # MindSpore uses base_lr as given
    assert cfg.train.precision == "fp16"  # amp_level O1
    assert cfg.data.mixup == 0.8 and cfg.data.auto_augment == "rand-m9-mstd0.5-inc1"


@pytest.mark.skipif(not SEEDS, reason="seed configs not found beside the repository")
def test_cswin_seed_mapping():
    cfg = load_config(str(SEED_DIR / "cswin_64_24322_small_224.yaml"))
    assert cfg.model.name == "cswin_64_24322_small_224"
    assert cfg.model.split_size == [2, 2, 7, 7]  # as the file says (official CSWin-S: [1, 2, 7, 7])
    assert cfg.model.depths == [2, 4, 32, 2]
    s = cfg.sched
    assert (s.warmup_epochs, s.cool_epochs, s.tail_epochs, s.over_epochs, s.epochs) == (20, 80, 60, 60, 380)
    assert (s.cool_lr, s.tail_lr, s.over_lr) == (1e-5, 1e-6, 1e-7)
    assert cfg.train.ema and cfg.train.ema_decay == 0.99992
    assert cfg.data.crop_pct == 0.9 and cfg.data.workers == 8
    assert cfg.optim.clip_grad == 5.0 and cfg.optim.betas == [0.9, 0.999]


def test_flat_table_targets_exist():
    for flat, (dotted, _) in FLAT_KEYS.items():
        apply_overrides(load_config(), [])  # the schema itself is fine
        section, key = dotted.split(".")
        assert key in to_dict(load_config())[section], flat
    assert not set(FLAT_KEYS) & set(IGNORED_FLAT_KEYS)


def test_unknown_key_names_closest():
    with pytest.raises(ConfigError) as err:
        config_from_dict({"optim": {"weight_decy": 0.1}})
    msg = str(err.value)
    assert "optim.weight_decy" in msg and "optim.weight_decay" in msg
    with pytest.raises(ConfigError, match=r"'optim\.lrr'.*'optim\.lr'"):
        load_config("quickstart", ["optim.lrr=1"])
    with pytest.raises(ConfigError, match=r"'modle'.*'model'"):
        config_from_dict({"name": "x", "modle": {}})


def test_unknown_flat_key_names_closest():
    with pytest.raises(ConfigError, match=r"'base_lrr'.*'base_lr'"):
        config_from_dict({"arch": "swinv2_tiny_window8_256", "base_lrr": 0.1})


def test_wrong_type_names_key_and_type():
    with pytest.raises(ConfigError, match=r"optim\.lr: expected float, got str 'fast'"):
        load_config("quickstart", ["optim.lr=fast"])
    with pytest.raises(ConfigError, match=r"data\.batch_size: expected int, got float 1\.5"):
        config_from_dict({"data": {"batch_size": 1.5}})
    with pytest.raises(ConfigError, match=r"model\.depths\[1\]: expected int"):
        load_config("quickstart", ["model.depths=[2, x]"])
    with pytest.raises(ConfigError, match=r"train\.precision: 'fp8' is not one of"):
        load_config("quickstart", ["train.precision=fp8"])


def test_overrides_parse_yaml_values():
    cfg = load_config("quickstart", ["optim.lr=1e-3", "model.depths=[1, 1]", "optim.clip_grad=null",
                                     "train.stages=[{epochs: 1, img_size: 16}]"])  # fmt: skip
    assert cfg.optim.lr == 1e-3 and cfg.model.depths == [1, 1] and cfg.optim.clip_grad is None
    assert cfg.train.stages[0].img_size == 16 and cfg.train.stages[0].window_size is None


def test_unknown_recipe_name():
    with pytest.raises(ConfigError, match="quickstart"):
        load_config("quickstrat")


@pytest.mark.parametrize(
    "override, key",
    [("data.batch_size=0", "data.batch_size"), ("sched.epochs=0", "sched.epochs"), ("sched.epochs=-3", "sched.epochs"),
     ("train.eval_every=0", "train.eval_every"), ("train.log_every=0", "train.log_every"),
     ("optim.accum_steps=0", "optim.accum_steps"), ("model.window_size=0", "model.window_size"),
     ("optim.lr=-1e-3", "optim.lr"), ("optim.lr=.nan", "optim.lr"), ("sched.min_lr=.inf", "sched.min_lr"),
     ("data.workers=-1", "data.workers"), ("train.stages=[{epochs: 0, img_size: 16}]", "train.stages[0].epochs"),
     ("train.device=gpu7", "train.device"), ("name=/tmp/elsewhere", "name"), ("name=../../escape", "name"),
     # each of these was a raw traceback (or a run that went on with a meaningless value) before it was checked
     ("data.crop_pct=-1", "data.crop_pct"), ("data.crop_pct=0", "data.crop_pct"), ("data.ratio=[0, 1]", "data.ratio"),
     ("data.ratio=[2, 1]", "data.ratio"), ("optim.betas=[1.5, 0.9]", "optim.betas"),
     ("optim.betas=[0.9]", "optim.betas"), ("data.auto_augment=xyz", "data.auto_augment"),
     ("model.num_heads=[0, 2]", "model.num_heads"), ("model.mlp_ratio=0", "model.mlp_ratio"),
     ("model.in_chans=0", "model.in_chans"), ("data.std=[0, 1, 1]", "data.std"),
     ("model.drop_path_rate=1.5", "model.drop_path_rate"), ("optim.momentum=2", "optim.momentum"),
     ("data.label_smoothing=1.5", "data.label_smoothing"), ("train.seed=18446744073709551616", "train.seed"),
     ("train.seed=" + "9" * 5000, "train.seed" if sys.version_info < (3, 11) else "a value cannot be read"),
 ("optim.clip_grad=-1", "optim.clip_grad"),
     ("optim.layer_decay=0", "optim.layer_decay"), ("model.num_classes=0", "model.num_classes"), ("name=.", "name"),
     ("name=a\x00b", "name"), ("name=runs/./x", "name")],
)  # fmt: skip
def test_values_out_of_range_name_the_key(override, key):
    with pytest.raises(ConfigError, match=re.escape(key)) as caught:
        load_config("quickstart", [override.replace("\\x00", "\x00")])
    assert len(str(caught.value)) < 400  # a 5,000-digit value is quoted by its beginning


@pytest.mark.parametrize("text, problem", [
    ("amp_level: O9\narch: swinv2_tiny_window8_256\n", "amp_level: 'O9' is not a MindSpore level"),
    ("lr_scheduler: [a]\narch: swinv2_tiny_window8_256\n", "lr_scheduler: ['a'] is not supported"),
    ("set: [imagenet]\narch: swinv2_tiny_window8_256\n", "set: ['imagenet'] is not supported"),
])  # fmt: skip
def test_seed_style_values_of_the_wrong_kind_are_one_error(tmp_path, text, problem):
    path = tmp_path / "flat.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(problem)):
        load_config(str(path))


ALIAS_BOMB = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x, x]"] + [
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]" for i in range(8)
] + ["model: *i", ""])  # 10^9 values once expanded, in about 700 bytes


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path):
    """The bomb expands when anything walks it (an error message's repr, ``asdict``): refused from its node graph,
    in a process that could not hold the expansion, with a short message."""
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(ALIAS_BOMB)
    code = "import sys; from swinkit.cli import main; sys.exit(main(['train', '-c', sys.argv[1]]))"
    proc = capped_python(code, str(bomb))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1 and len(proc.stderr) < 500
    assert "bomb.yaml: its aliases expand to more than 10000 values" in proc.stderr


def test_the_same_bomb_in_a_checkpoints_metadata_is_refused_under_predict(tmp_path):
    weights = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(1)}, weights, metadata={"config": ALIAS_BOMB})
    code = ("import sys; from swinkit.cli import main\n"
            "sys.exit(main(['predict', '--checkpoint', sys.argv[1], sys.argv[2]]))")
    proc = capped_python(code, str(weights), str(REPO / "examples" / "digit-7.png"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-2000:]
    assert "its aliases expand to more than" in proc.stderr and len(proc.stderr) < 600


def test_aliases_within_the_budget_still_load(tmp_path):
    path = tmp_path / "anchors.yaml"
    path.write_text("model:\n  name: swinv2_tiny_window8_256\n  depths: &d [2, 2]\n  num_heads: *d\n")
    assert load_config(str(path)).model.num_heads == [2, 2]


@pytest.mark.parametrize("content, problem", [
    (b"model:\n  name: \xff\xfe\n", "not UTF-8 text"),
    (("a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 150))).encode(), "nested deeper than 32 levels"),
    (b"[" * 100_000, "nested deeper than 32 levels"),
    (b"a: &a [*a]\n", "refers to its own anchor"),
    (b"x: " + b"1" * (2 << 20), "more than any config"),
])  # fmt: skip
def test_unreadable_yaml_is_one_config_error(tmp_path, content, problem):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=problem):
        load_config(str(path))


def test_an_image_size_whose_activations_cannot_fit_is_refused_with_the_number(tmp_path, capsys):
    """Estimated before anything is allocated (a 65536 px step once took the machine's memory)."""
    for overrides in (["model.img_size=65536"], ["model.patch_size=1", "model.img_size=8192"],
                      ["train.stages=[{epochs: 1, img_size: 100000}]"]):  # fmt: skip
        assert main(["train", "--output", str(tmp_path / "run"), "data.max_train_samples=32",
                     "data.batch_size=8", *overrides]) == 2
        err = capsys.readouterr().err
        assert re.search(r"needs at least [\d.]+ GiB of activations, more than the [\d.]+ GiB this cpu has", err)
        assert not (tmp_path / "run").exists()


def test_devices_torch_knows_are_accepted():
    for device in ("auto", "cpu", "cuda", "cuda:1", "mps", "xpu", "npu:0"):
        assert load_config("quickstart", [f"train.device={device}"]).train.device == device


def test_yaml_errors_and_tags_name_the_file_and_line(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("model:\n  name: swinv2_tiny_window8_256\n  depths: [2, 2\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml line \d+.*not valid YAML"):
        load_config(str(broken))
    tagged = tmp_path / "tagged.yaml"
    tagged.write_text("model:\n  name: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match=r"tagged\.yaml line 2"):
        load_config(str(tagged))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config("quickstart", ["model.name=!!python/name:os.system"])


def test_a_warmup_longer_than_the_run_warns_and_phases_that_cannot_fit_are_refused(caplog):
    with caplog.at_level(logging.WARNING):
        check_schedule(load_config("quickstart", ["sched.epochs=2", "sched.warmup_epochs=5"]))
    assert any("never reaches optim.lr" in r.getMessage() for r in caplog.records)
    with pytest.raises(ConfigError, match="more than the run's 10"):
        check_schedule(load_config("quickstart", ["sched.epochs=10", "sched.warmup_epochs=4", "sched.tail_epochs=7"]))
