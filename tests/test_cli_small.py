"""Small edges: credentials in Authorization headers, `kit --help`, progress output to a file, `make submit` quoting."""
import base64
import subprocess
import sys

from kit.kaggle_client import redact
from kit.ledger import Ledger
from tests.helpers import ROOT, kit, make_tiny
from tests.run_factory import make_run


def test_redact_catches_basic_and_bearer_authorization_values(monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "kit-user")
    monkeypatch.setenv("KAGGLE_KEY", "k3y-5ecret-0123456789")
    basic = base64.b64encode(b"kit-user:k3y-5ecret-0123456789").decode()
    text = redact(f"request headers {{'Authorization': 'Basic {basic}'}} and a log line Authorization: Basic {basic}")
    assert basic not in text and "Basic ***" in text
    other = redact("authorization: Bearer eyJhbGciOi.abc-def_ghi and Authorization=Basic dXNlcjpwYXNz")
    assert "eyJhbGciOi" not in other and "dXNlcjpwYXNz" not in other


def test_help_lists_the_commands_in_the_loop_order_one_line_each():
    r = kit("--help")
    assert "INFO: Showing help" not in r.stdout + r.stderr
    lines = [ln.split()[0] for ln in r.stdout.splitlines() if ln.startswith("  ")]
    assert lines[:3] == ["demo-data", "folds", "adval"]
    assert lines.index("predict") < lines.index("ensemble") < lines.index("submit") < lines.index("score")
    assert lines.index("submit") < lines.index("ledger") < lines.index("cvlb") and len(lines) == len(set(lines))


def test_make_submit_passes_the_message_as_data(demo_copy, tmp_path):
    make_run(tmp_path / "runs", demo_copy, "exp", 0.5)
    marker = tmp_path / "ran"
    msg = f"it's \"quoted\" $(touch {marker}) `touch {marker}` $$HOME; echo hi \\ done"
    r = subprocess.run(["make", "-C", str(ROOT), "-o", ".venv/.installed", "submit",
                        f"EXP=exp --runs={tmp_path / 'runs'} --out={tmp_path / 'subs'}", f"MSG={msg}"],
                       capture_output=True, text=True, timeout=300)
    assert not marker.exists(), "the message was run as a shell command"
    assert r.returncode == 0, r.stderr[-2000:]
    [row] = Ledger(tmp_path / "subs" / "ledger.db").rows()
    assert row["message"] == msg


def test_progress_to_a_file_is_one_line_per_epoch_without_carriage_returns(tmp_path):
    comp = make_tiny(tmp_path / "comp")
    log = tmp_path / "log.txt"
    code = ("from kit import Config, Trainer, run\n"
            "class Exp(Trainer):\n"
            "    config = Config(model='test_resnet', img_size=16, batch_size=4, epochs=2, num_workers=0, n_folds=3)\n"
            f"run(Exp, ['--comp={comp}', '--out_dir={tmp_path / 'runs'}', '--name=p'])\n")
    script = tmp_path / "exp_progress.py"
    script.write_text(code)
    with open(log, "w") as f:  # stdout and stderr both to a file, as `make demo > log 2>&1` does
        r = subprocess.run([sys.executable, str(script)], stdout=f, stderr=subprocess.STDOUT, timeout=300)
    text = log.read_bytes().decode()  # read_text would turn each \r into \n
    assert r.returncode == 0, text[-2000:]
    assert "\r" not in text
    assert sum(line.startswith("fold=0 epoch=") for line in text.splitlines()) == 2
