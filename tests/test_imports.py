"""Imports inside kit point one way (a cycle between kit's modules is a design bug), and the commands that only
read tables never load torch."""
import ast
import subprocess
import sys
from pathlib import Path

KIT = Path(__file__).resolve().parents[1] / "kit"


def module_name(path: Path) -> str:
    """'kit.folds' for kit/folds.py, 'kit.sub' for kit/sub/__init__.py."""
    parts = path.relative_to(KIT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def kit_imports(path: Path, modules: set[str]) -> set[str]:
    """The kit modules that `path` imports, anywhere in the file (lazy imports inside functions count too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from . import folds` names a module
    return {m for m in found if m in modules and m != name and m != "kit"}


def import_graph() -> dict[str, set[str]]:
    """Every kit module and the kit modules it imports."""
    files = sorted(KIT.rglob("*.py"))
    modules = {module_name(p) for p in files}
    return {module_name(p): kit_imports(p, modules) for p in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_walk_sees_real_imports():
    graph = import_graph()
    assert "kit.trainer" in graph and "kit.config" in graph["kit.trainer"]
    assert "kit.folds" in graph["kit.trainer"]  # `from . import folds as folds_mod`
    assert "kit.submissions" in graph["kit.pseudo"]  # an import inside a function counts


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_kit_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


RUN_FILES = {"config.yaml", "cv.json", "lineage.json", "predict.json", "schemes.json", "ensemble.json", "pseudo.json",
             "summary.json", "done.json", "oof.parquet", "test.parquet", "oof_tta.parquet", "test_tta.parquet",
             "oof_masks.npz", "test_masks.npz", "best.safetensors", "metrics.jsonl", "steps.jsonl", "pseudo.parquet"}


def test_only_rundir_names_the_run_folder_files():
    named = {}
    for path in sorted(KIT.rglob("*.py")):
        if path.name == "rundir.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in RUN_FILES:  # docstrings and messages are whole
                # sentences, so a bare file name is a path being built
                named.setdefault(path.name, set()).add(node.value)
    assert named == {}, f"modules that open run-folder files themselves instead of through RunDir: {named}"


HEAVY = ("torch", "timm", "torchvision")
TABLE_MODULES = ("kit.cli", "kit.folds", "kit.tasks", "kit.validate", "kit.submissions", "kit.leaderboard",
                 "kit.ensemble", "kit.report", "kit.compare", "kit.ledger")


def test_commands_that_only_read_tables_do_not_load_torch(demo_dir, tmp_path):
    """kit folds / validate / submit / ledger / ensemble / report start in a second or two, not after torch + timm."""
    probe = "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]; print(sorted(sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe, *TABLE_MODULES], capture_output=True, text=True, check=True)
    assert not set(HEAVY) & set(eval(out.stdout)), "a table module imports torch at import time"
    run_cli = "import sys; sys.argv = ['kit', *sys.argv[1:]]; from kit.cli import main; main()"
    comp = tmp_path / "demo"
    subprocess.run(["cp", "-r", str(demo_dir), str(comp)], check=True)
    for args in (["folds", str(comp), "--n=3", "--force"],
                 ["validate", str(comp / "sample_submission.csv"), f"--comp={comp}"]):
        r = subprocess.run([sys.executable, "-X", "importtime", "-c", run_cli, *args], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
        loaded = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
        assert not set(HEAVY) & loaded, (args, set(HEAVY) & loaded)
