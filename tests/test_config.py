import subprocess
import sys

import pytest

from kit.config import Config, ConfigError, field_comments, format_help, parse_overrides, resolve_config
from tests.conftest import ROOT


def test_cast_by_field_type():
    out = parse_overrides(["--epochs=3", "--lr=3e-4", "--pretrained=false", "--fold=all", "--model", "resnet50"])
    assert out == {"epochs": 3, "lr": 3e-4, "pretrained": False, "fold": "all", "model": "resnet50"}
    assert isinstance(out["lr"], float) and isinstance(out["epochs"], int)


def test_large_numbers_are_not_turned_into_inf_and_floats_into_ints_only_when_whole():
    assert parse_overrides(["--lr=2e9672320848"])["lr"] == float("2e9672320848")
    assert parse_overrides(["--epochs=1e2"])["epochs"] == 100
    with pytest.raises(ConfigError, match="--epochs='2.5'"):
        parse_overrides(["--epochs=2.5"])


def test_num_workers_auto_is_minus_one_and_other_words_are_refused():
    assert parse_overrides(["--num_workers=auto"]) == parse_overrides(["--num_workers=-1"]) == {"num_workers": -1}
    assert parse_overrides(["--num_workers", "AUTO"]) == {"num_workers": -1}
    for arg in ("--num_workers=many", "--epochs=auto"):
        with pytest.raises(ConfigError, match=arg.split("=")[0]):
            parse_overrides([arg])


def test_bare_flag_is_true_and_fold_stays_a_string():
    assert parse_overrides(["--pretrained"]) == {"pretrained": True}
    assert parse_overrides(["--fold=0"]) == {"fold": "0"}


@pytest.mark.parametrize("arg, words", [
    ("--no_such_key=1", ["no_such_key"]),
    ("--epoch=2", ["--epoch", "--epochs"]),
    ("--batchsize=8", ["batchsize", "--batch_size"]),
])
def test_unknown_key_names_key_and_closest(arg, words):
    with pytest.raises(ConfigError) as e:
        parse_overrides([arg])
    for w in words:
        assert w in str(e.value)


@pytest.mark.parametrize("arg, key", [("--epochs=abc", "--epochs"), ("--lr=fast", "--lr"), ("--pretrained=maybe", "--pretrained")])
def test_bad_type_names_key(arg, key):
    with pytest.raises(ConfigError, match=key):
        parse_overrides([arg])


def test_override_keeps_base_and_rejects_unknown():
    base = Config(epochs=5)
    new = base.override(lr=0.1)
    assert (new.epochs, new.lr, base.lr) == (5, 0.1, Config().lr)
    with pytest.raises(ConfigError, match="did you mean --lr"):
        base.override(lrr=0.1)


def test_help_lists_every_field_with_type_default_and_comment():
    text = format_help(Config())
    comments = field_comments(Config)
    for name in Config.__dataclass_fields__:
        assert f"--{name}" in text
        assert comments.get(name), f"field {name} has no comment"
    epochs_line = next(line for line in text.splitlines() if line.strip().startswith("--epochs "))
    assert epochs_line.split()[1:3] == ["int", "10"]


def test_resolve_config_exits_with_help(capsys):
    with pytest.raises(SystemExit) as e:
        resolve_config(Config(), ["--help"])
    assert e.value.code == 0
    assert "--weight_decay" in capsys.readouterr().out


def test_experiment_cli_fails_at_once_naming_the_key():
    exp = ROOT / "experiments" / "exp001_baseline.py"
    for arg, want in [("--no_such_key=1", "unknown config key --no_such_key"), ("--epochs=abc", "--epochs='abc': expected int")]:
        r = subprocess.run([sys.executable, str(exp), arg], capture_output=True, text=True, timeout=120)
        assert r.returncode != 0 and want in r.stderr, r.stderr
    r = subprocess.run([sys.executable, str(exp), "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--epochs" in r.stdout and "passes over the training fold" in r.stdout
