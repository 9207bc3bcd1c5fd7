"""The `kit` command: one sub-command per stage of the competition loop."""
from __future__ import annotations

from pathlib import Path

import fire



# demos of another kind get a folder of their own unless --out names one: never mixed into the digits folder
DEMO_FOLDERS = {"segmentation": "data/demo_seg", "multilabel": "data/demo_multilabel"}


def demo_data(out: str = "data/demo", seed: int = 0, task: str = "multiclass") -> None:
    """Write the demo competition (scikit-learn digits) to `out`; --task=multihead: digit_pair x parity heads;
    --task=multilabel: the digits' properties (even, big, prime, loop), in data/demo_multilabel;
    --task=segmentation: synthetic shapes with RLE masks, in data/demo_seg (unless --out says otherwise)."""
    from .demo import make_demo
    if out == "data/demo":
        out = DEMO_FOLDERS.get(task, out)
    path = make_demo(out, seed, task)
    print(f"demo competition written to {path}")


def submit(exp: str, m: str = "", runs: str = "runs", out: str = "submissions", target: str = "auto",
           force: bool = False) -> None:
    """Build, validate and write runs/<exp>'s CSV, record it in the ledger, score it (local/Kaggle/later)."""
    from .submissions import SubmissionError, submit_run
    try:
        row = submit_run(exp, str(m), runs, out, target=target, force=force)
    except SubmissionError as e:
        raise SystemExit(str(e)) from None
    cv = "n/a" if row["cv"] is None else f"{row['cv']:.4f}"
    if row["cv"] is not None and row["cv_folds"] != "all":
        cv += f" (folds {row['cv_folds']} only)"
    print(f"wrote {row['file']}  [ledger #{row['id']}, sha256 {row['sha256'][:12]}]" + (f"  ({m})" if m else ""))
    print(f"CV {row['metric']}: {cv}")
    if row["status"] == "scored":
        print(f"public {row['metric']}: {row['public']:.4f}  private: {row['private']:.4f}")
    elif row["status"] == "failed":
        raise SystemExit(f"Kaggle did not accept the submission: {row['error']}")
    elif row["target"] == "kaggle":
        print(f"uploaded to Kaggle (ref {row['kaggle_ref']}); `kit sync` fetches the score once it is ready")
    else:
        print(f"score pending: `kit score {row['id']} --public=...` once you know it")


def validate(csv: str, comp: str = "data/demo", all: bool = False) -> None:
    """Check any submission CSV against the competition's format; exit non-zero listing every problem."""
    from .competition import load_competition
    from .validate import validate_submission
    problems = validate_submission(load_competition(comp), Path(csv), per_kind=10**9 if all else 20)
    if problems:
        raise SystemExit("\n".join(problems) + f"\n{csv}: INVALID")
    print(f"{csv}: valid")


def _flag(value) -> bool:
    """A boolean option as fire passes it: True/False, or text such as 'false' (fire keeps it a string)."""
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on")


def _ledger(out: str, create: bool = False):
    from .ledger import Ledger
    path = Path(out) / "ledger.db"
    if not create and not path.exists():
        raise SystemExit(f"{path}: no ledger yet (`kit submit` creates it)")
    return Ledger(path)


def score(submission: str, public: float = None, private: float = None, comp: str = "",
          out: str = "submissions") -> None:
    """Record public/private scores of a submission (ledger id, CSV name, sha256, any CSV); none given: rescore locally."""
    from .submissions import SubmissionError, record_score
    try:
        row = record_score(_ledger(out, create=True), submission, public, private, comp)
    except (SubmissionError, KeyError) as e:
        raise SystemExit(str(e).strip('"')) from None
    print(f"#{row['id']} {Path(row['file']).name}: public {row['public']}  private {row['private']}")


def sync(out: str = "submissions") -> None:
    """Fill scores of pending Kaggle submissions from Kaggle's submissions list."""
    from .kaggle_client import redact
    from .submissions import sync_kaggle
    try:
        changed = sync_kaggle(_ledger(out))
    except Exception as e:  # network, auth or an unknown slug: say which, never with a credential in it
        raise SystemExit(redact(f"kit sync: {type(e).__name__}: {e}")) from None
    for r in changed:
        print(f"#{r['id']} {r['status']}: public {r['public']}  private {r['private']}" +
              (f"  error: {r['error']}" if r["error"] else ""))
    print(f"{len(changed)} submission(s) updated")


def ledger(sort: str = "", asc: bool = False, limit: int = 0, comp: str = "", out: str = "submissions") -> None:
    """Print the ledger: newest first, or --sort=<column> (--asc for ascending)."""
    from .compare import format_table, ledger_table
    try:
        table = ledger_table(_ledger(out), sort, asc, limit, comp)
    except KeyError as e:
        raise SystemExit(str(e).strip('"')) from None
    print(format_table(table))


def diff(a: str, b: str, comp: str = "data/demo", png: str = "", out: str = "submissions") -> None:
    """How two submissions (CSV paths or ledger ids) disagree: count, cross-tab, PNG grid of the images."""
    from .compare import comp_of, diff_submissions, resolve_csv
    led = _ledger(out) if (Path(out) / "ledger.db").exists() else None
    try:
        (pa, ra), (pb, _) = resolve_csv(str(a), led), resolve_csv(str(b), led)
    except (KeyError, FileNotFoundError) as e:
        raise SystemExit(str(e).strip('"')) from None
    png_path = Path(png or Path(out) / f"diff_{pa.stem}_vs_{pb.stem}.png")
    d = diff_submissions(comp_of(ra, comp), pa, pb, png_path)
    print(f"a: {pa}\nb: {pb}\n{d['n_differ']} of {d['n']} ids differ ({d['n_differ'] / max(d['n'], 1):.1%})")
    if d["only_a"] or d["only_b"]:
        print(f"ids only in a: {d['only_a']}, only in b: {d['only_b']}")
    if d["crosstab"] is not None:
        print("cross-tab (rows: a, columns: b):\n" + d["crosstab"].to_string())
    if d["png"]:
        print(f"images where they differ: {d['png']}")


def cvlb(comp: str = "", png: str = "", out: str = "submissions") -> None:
    """CV against public score over the ledger: correlation, scatter, and per validation scheme which to trust."""
    from .compare import compare_schemes, cv_lb_correlation
    led = _ledger(out)
    info = cv_lb_correlation(led, comp, Path(png or Path(out) / "cvlb.png"))
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    print(f"{info['competition']}: {info['n']} submission(s) with CV and public score")
    print(f"Pearson {fmt(info['pearson'])}  Spearman {fmt(info['spearman'])}" +
          ("" if info["pearson"] is not None else " (needs 3+ distinct points)"))
    if info["png"]:
        print(f"scatter: {info['png']}")
    by = compare_schemes(led, comp, Path(out) / "cvlb_schemes.png")
    if by["schemes"]:
        print(f"{'scheme':<14}{'n':>4}{'Pearson':>9}{'Spearman':>10}{'|CV-public|':>13}{'CV-public':>11}")
        for name, s in by["schemes"].items():
            print(f"{name:<14}{s['n']:>4}{fmt(s['pearson']):>9}{fmt(s['spearman']):>10}{s['gap']:>13.3f}{s['bias']:>11.3f}")
        print(f"recommended validation scheme: {by['recommended']} (tracks the public score best)")
        print(f"scatter per scheme: {by['png']}")


def adval(comp: str = "data/demo", size: int = 0, seed: int = 0) -> None:
    """Adversarial validation: train-vs-test AUC, the most test-like augmentation, grids and statistics."""
    from .adval import format_report, run_adval
    from .competition import load_competition
    from .workdir import work_dir
    c = load_competition(comp)
    print(format_report(run_adval(c, size=size, seed=seed), work_dir(c) / "adval"))


def pseudo(exp: str, rounds: int = 3, threshold: float = 0.9, per_class_top: int = 0, soft: bool = False,
           runs: str = "runs", launch: str = "", args: str = "", patience: int = 1, submit: bool = False,
           out: str = "submissions", target: str = "auto") -> None:
    """Pseudo-label rounds from runs/<exp>: runs/<exp>_pl1, _pl2, ... until CV stops improving; --submit each."""
    from functools import partial

    from .competition import CompetitionError
    from .pseudo import run_pseudo, submit_round
    on_round = partial(submit_round, runs=runs, out=out, target=target) if submit else None
    try:
        run_pseudo(exp, rounds, threshold, per_class_top, soft, runs, launch.split(), args.split(), submit=on_round,
                   patience=patience)
    except CompetitionError as e:
        raise SystemExit(f"kit pseudo: {e}") from None


def folds(comp: str = "data/demo", n: int = 5, scheme: str = "", seed: int = 42, group: str = "",
          force: bool = False) -> None:
    """Write <comp>/folds.csv (id, fold): stratified | group | multilabel | stratified_group (default: the scheme a
    first training run uses, so both make the same folds); --force replaces."""
    from .competition import CompetitionError, load_competition
    from .folds import create_folds
    from .tasks import task_of
    try:
        competition = load_competition(comp)
        scheme = scheme or task_of(competition).fold_scheme
        path, table, written = create_folds(competition, int(n), scheme, int(seed), group, force)
    except CompetitionError as e:
        raise SystemExit(f"kit folds: {e}") from None
    sizes = table.fold.value_counts().sort_index()
    print(f"{path}: {'written' if written else 'unchanged (same folds already there)'}; {scheme}, seed {seed}, "
          f"rows per fold " + ", ".join(str(v) for v in sizes.tolist()))


def predict(exp: str, tta: str = "none", method: str = "mean", runs: str = "runs", batch_size: int = 0,
            num_workers: int = -1, max_batch: int = -1, oof: bool = True, keep_tta: str = "auto",
            out: str = "submissions") -> None:
    """Test (and OOF) probabilities of runs/<exp> over fold models x TTA views; --oof=false: test images only.

    CV without and with the views under every validation scheme of the run; the scheme `kit cvlb` recommends
    (ledger in --out) decides whether they are kept (--keep_tta=always keeps them whatever it says).
    """
    from .competition import CompetitionError
    from .predict import predict_run
    from .rundir import RunDir
    from .tasks import task_of
    from .tta_judge import format_judgement
    run = RunDir(Path(runs) / exp)  # untrained: predict_run says what is missing
    if run.has_config() and task_of(run.competition()).masks:  # masks: views undone, fold mean
        return predict_seg(exp, runs, "" if tta == "none" else tta, batch_size)
    try:
        info = predict_run(exp, tta, method, runs, batch_size, num_workers, max_batch, _flag(oof), keep_tta,
                           Path(out) / "ledger.db")
    except (CompetitionError, FileNotFoundError, ValueError) as e:
        raise SystemExit(f"kit predict: {e}") from None
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    print(f"{exp}: {len(info['folds'])} fold model(s) x {len(info.get('tta_views', info['views']))} view(s) "
          f"({','.join(info.get('tta_views', info['views']))}, {info['method']})")
    if info.get("schemes"):
        print("\n".join(format_judgement(info["metric"], info["schemes"], info, info["primary"])))
    else:
        print(f"CV {info['metric']} without TTA: {fmt(info['cv'])}  with TTA: {fmt(info['cv_tta'])}")
    if info.get("fold_tests"):
        print(f"per-fold test tables with TTA (pseudo-labels read them): {', '.join(info['fold_tests'].values())}")
    print(f"wrote {info['test']}" + (f" and {info['oof_tta']}" if info["oof_tta"] else
                                     "" if info.get("schemes") else " (test images only)"))


def ensemble(*exps: str, method: str = "soft", name: str = "", runs: str = "runs", seed: int = 0) -> None:
    """Blend runs' OOF/test tables (soft | hard | rank | weighted) into runs/<name>, an experiment like any other."""
    from .competition import CompetitionError
    from .ensemble import ensemble_runs
    if not name:
        raise SystemExit("kit ensemble: give the new run a --name")
    try:
        info = ensemble_runs([str(e) for e in exps], method, str(name), runs, seed)
    except (CompetitionError, FileNotFoundError, ValueError) as e:
        raise SystemExit(f"kit ensemble: {e}") from None
    print(f"{'run':<28}{'weight':>8}{'CV ' + info['metric']:>16}")
    for member, cv in info["members_cv"].items():
        print(f"{member:<28}{info['weights'][member]:>8.3f}{cv:>16.4f}")
    print(f"{name + ' (' + method + ')':<28}{'':>8}{info['cv']:>16.4f}")
    print(f"wrote {info['run_dir']}/oof.parquet, test.parquet, cv.json")


def predict_seg(exp: str, runs: str = "runs", tta: str = "", batch_size: int = 0, device: str = "") -> None:
    """Segmentation: re-predict runs/<exp>'s test masks from every fold's best weights with --tta views, fold mean."""
    from .infer import predict_masks
    print(f"wrote {predict_masks(exp, runs, tta, batch_size, device)}")


def export(*exps: str, out: str = "", runs: str = "runs", wheels: str = "kit", user: str = "", measure: bool = True,
           force: bool = False) -> None:
    """A run, runs or an ensemble as a Kaggle Dataset folder + offline notebook (code competitions): export/<name>."""
    from .competition import CompetitionError
    from .export import ExportError, export_runs
    names = [str(e) for e in exps]
    try:
        info = export_runs(names, out or f"export/{names[0] if len(names) == 1 else '_'.join(names)}", runs, wheels,
                           user, _flag(measure), _flag(force))
    except (ExportError, CompetitionError, FileNotFoundError) as e:
        raise SystemExit(f"kit export: {e}") from None
    print(f"exported {', '.join(info['members'])} ({info['method']}) to {info['out']}: dataset {info['dataset']}, "
          f"kernel {info['kernel']}")
    print(f"package size: {info['size_bytes'] / 2**20:.1f} MiB ({', '.join(info['wheels']) or 'no wheels'})")
    if "cpu_s_per_1000" in info:
        diff = info["max_abs_diff_vs_run"]
        print(f"notebook CPU time: {info['cpu_s_per_1000']} s per 1,000 test images (1 thread, {info['images']} "
              f"images measured)" + ("" if diff is None else f"; max |p - test.parquet| = {diff:.2e}"))


def push(folder: str, kernel: bool = False, submit: bool = False, m: str = "", out: str = "submissions") -> None:
    """Upload export/<name> as a Kaggle Dataset (new or a new version); --kernel pushes its notebook; --submit submits it."""
    from .push import PushError, push_export
    try:
        row = push_export(folder, _flag(kernel), _flag(submit), str(m), out)
    except (PushError, FileNotFoundError) as e:
        raise SystemExit(f"kit push: {e}") from None
    print(f"dataset {row['kaggle_dataset']}" + (f", kernel {row['kaggle_kernel']}" if row["kaggle_kernel"] else "") +
          (f", code submission ref {row['kaggle_ref']} (`kit sync` fetches its score)" if row["kaggle_ref"] else "") +
          f"  [ledger #{row['id']}]")


def sweep(yaml: str, trials: int = 10, workers: int = 1, runs: str = "runs", gpus: str = "", seed: int = 0,
          storage: str = "", heartbeat: float = 10) -> None:
    """Run a wandb sweep YAML locally with Optuna (SQLite in runs/sweeps/, or --storage=postgresql://... shared by
    workers on several machines); --gpus=0,1 gives each worker one; a trial silent 3 heartbeats is run again."""
    from .sweep import SweepStorageError, run_sweep
    from .sweep_spec import SweepError
    try:
        result = run_sweep(yaml, trials, workers, runs, str(gpus), seed, str(storage), float(heartbeat))
    except (SweepError, SweepStorageError) as e:
        raise SystemExit(f"kit sweep: {e}") from None
    if result["best"] is None:
        raise SystemExit("kit sweep: no trial completed")


def report(comp: str = "", out: str = "", runs: str = "runs", subs: str = "submissions", diff: str = "",
           misclassified: bool = True) -> None:
    """A static HTML site of one competition (default: the latest in the ledger) in reports/<comp>: ledger, CV vs
    leaderboard per scheme, a page per run; --diff=3:5 adds diff pages; opens from disk, offline."""
    from .report import ReportError, build_report
    try:
        info = build_report(str(comp), str(out), runs, subs, str(diff), misclassified)
    except ReportError as e:
        raise SystemExit(f"kit report: {e}") from None
    print(f"wrote {info['index']}: {info['rows']} submission(s), {info['pages']} run page(s) "
          f"({info['rebuilt']} page(s) rebuilt) in {info['seconds']:.1f} s")


# The loop's order: make data and folds, look at train vs test, (train with accelerate launch), predict,
# blend, pseudo-label, check and submit (or export and push a notebook), record scores, compare, report.
COMMANDS = {"demo_data": demo_data, "folds": folds, "adval": adval, "predict": predict, "predict_seg": predict_seg,
            "ensemble": ensemble, "pseudo": pseudo, "sweep": sweep, "validate": validate, "submit": submit,
            "export": export, "push": push, "score": score, "sync": sync, "ledger": ledger, "diff": diff,
            "cvlb": cvlb, "report": report}


def usage() -> str:
    """`kit --help`: the commands in the loop's order, one line each."""
    width = max(len(n) for n in COMMANDS) + 2
    lines = [f"  {name.replace('_', '-'):<{width}}{(fn.__doc__ or '').strip().splitlines()[0]}"
             for name, fn in COMMANDS.items()]
    return ("usage: kit COMMAND [ARGS] (kit COMMAND --help for its arguments)\n"
            "training itself: accelerate launch experiments/<exp>.py --fold=all\n\ncommands:\n" + "\n".join(lines))


def clean_errors(name: str, fn):
    """Run a command; a user-fixable error becomes one paragraph and exit status 1, never a traceback."""
    import functools

    from .errors import KitError

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KitError as e:
            raise SystemExit(f"kit {name.replace('_', '-')}: {e}") from None
    return wrapped


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `kit` console script."""
    import sys
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    fire.Fire({name: clean_errors(name, fn) for name, fn in COMMANDS.items()}, command=argv, name="kit")
