"""The pages of `kit report`: the competition overview with the ledger, one page per run, diffs, adval."""
from __future__ import annotations

import re

from . import report_charts as charts
from .report_html import cell, esc, image, images_row, num, page, table, tiles


def page_name(run: str) -> str:
    """File name of a run's page (any character a file system may refuse becomes '_')."""
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", run) + ".html"


def _run_link(name: str, have: set, prefix: str = "runs/") -> str:
    return f'<a href="{prefix}{page_name(name)}">{esc(name)}</a>' if name in have else esc(name)


def _git(row: dict) -> str:
    commit = row.get("git_commit") or ""
    return commit[:8] + ("*" if row.get("git_dirty") else "")


def ledger_html(ctx: dict) -> str:
    """The ledger as one sortable, filterable table; the two final picks highlighted; rows link to run pages."""
    schemes, picks, have = ctx["scheme_names"], ctx["picks"], ctx["pages"]
    heads = ["id", "time (UTC)", "experiments", *[f"CV {s}" for s in schemes], "CV folds", "public", "private",
             "message", "git", "status"]
    out = []
    for r in ctx["rows"]:
        exps = r.get("experiments") or []
        classes = [c for c, k in (("pick-cv", "cv"), ("pick-public", "public")) if picks.get(k) == r["id"]]
        badges = "".join(f'<span class="badge b-{k}">best {k if k == "public" else "CV " + ctx["recommended_label"]}'
                         "</span>" for k in ("cv", "public") if picks.get(k) == r["id"])
        first = _run_link(exps[0], have) if exps else ""
        rest = " + ".join(_run_link(e, have) for e in exps[1:])
        cells = [f'<td class="num" data-v="{r["id"]}">{r["id"]}{badges}</td>',
                 f"<td>{esc((r.get('created_utc') or '').replace('T', ' ')[:19])}</td>",
                 f"<td>{first}{' <small>(' + rest + ')</small>' if rest else ''}</td>"]
        cells += [cell(ctx["row_schemes"][r["id"]].get(s)) for s in schemes]
        cells += [cell(r.get("cv_folds")), cell(r.get("public")), cell(r.get("private")), cell(r.get("message")),
                  f"<td><code>{esc(_git(r))}</code></td>", cell(r.get("status"))]
        out.append(f'<tr id="s{r["id"]}" class="{" ".join(classes)}" data-status="{esc(r.get("status"))}">'
                   + "".join(cells) + "</tr>")
    statuses = sorted({str(r.get("status")) for r in ctx["rows"]})
    options = '<option value="">any status</option>' + "".join(f'<option>{esc(s)}</option>' for s in statuses)
    head = "".join(f"<th>{esc(h)}</th>" for h in heads)
    return (f'<div class="controls"><input id="filter" type="search" placeholder="filter: experiment, message, '
            f'commit, ..."> <select id="status">{options}</select> <span id="count" class="note"></span></div>'
            f'<table class="sortable" id="ledger"><thead><tr>{head}</tr></thead><tbody>{"".join(out)}</tbody></table>')


def _picks_html(ctx: dict) -> str:
    rows = {r["id"]: r for r in ctx["rows"]}
    parts = []
    for key, label in (("cv", f"best CV on the {ctx['recommended_label']} scheme"), ("public", "best public score")):
        r = rows.get(ctx["picks"].get(key))
        if r:
            exp = (r.get("experiments") or ["?"])[0]
            parts.append(f'<div class="box"><span class="badge b-{key}">{esc(label)}</span><br>'
                         f'<a href="#s{r["id"]}">#{r["id"]}</a> {_run_link(exp, ctx["pages"])} CV '
                         f'{num(ctx["row_schemes"][r["id"]].get(ctx["recommended"]) or r.get("cv"))} public '
                         f'{num(r.get("public"))}<br><span class="note">{esc(r.get("message"))}</span></div> ')
    return "".join(parts) or '<p class="note">No scored submission yet.</p>'


def index_page(ctx: dict) -> str:
    """The competition overview: final picks, ledger, CV against leaderboard per scheme, best public over time."""
    sch = ctx["schemes"]
    srows = [[name + (" (recommended)" if name == sch["recommended"] else ""), s["n"], s["pearson"], s["spearman"],
              s["gap"], s["bias"]] for name, s in sch["schemes"].items()]
    rec = sch["recommended"]
    corr = sch["schemes"].get(rec, {}) if rec else {}
    title = (f"recommended validation scheme: {rec} (Spearman {num(corr.get('spearman'), 3) or 'n/a'}, "
             f"Pearson {num(corr.get('pearson'), 3) or 'n/a'})") if rec else "no scored submission yet"
    links = "".join(f'<li><a href="{esc(href)}">{esc(text)}</a></li>' for text, href in ctx["extra_pages"])
    body = (f'<p>{len(ctx["rows"])} submission(s), metric <b>{esc(ctx["metric"])}</b>; built {esc(ctx["built"])}.</p>'
            f"<h2>Final picks</h2>{_picks_html(ctx)}"
            f"<h2>Ledger</h2>{ledger_html(ctx)}"
            f"<h2>CV against the leaderboard</h2><p><b>{esc(title)}</b></p>"
            + table(["scheme", "n", "Pearson", "Spearman", "mean |CV-public|", "mean CV-public"], srows)
            + image(ctx["charts"].get("cvlb"), "CV vs public and private per validation scheme")
            + "<h2>Best public score so far</h2>" + image(ctx["charts"].get("best"), "public score over time")
            + (f"<h2>More</h2><ul>{links}</ul>" if links else ""))
    return page(f"{ctx['competition']}: submissions", body, ctx["nav"])


def _lineage_html(info: dict, have: set) -> str:
    lin, raw = info["lineage"] or {}, info["raw_lineage"] or {}
    facts = [("git commit", lin.get("git_commit") or raw.get("commit")),
             ("uncommitted changes", lin.get("git_dirty") if lin.get("git_dirty") is not None else raw.get("dirty")),
             ("data hash", lin.get("data_hash")), ("folds hash", lin.get("folds_hash")),
             ("experiment file", raw.get("experiment_file")), ("trainer", raw.get("trainer_class")),
             ("processes", raw.get("num_processes")), ("mixed precision", raw.get("mixed_precision"))]
    out = table(["", "value"], [[k, "" if v is None else str(v)] for k, v in facts], sortable=False)
    if info["parent"]:
        out += f"<p>parent experiment: {_run_link(info['parent'], have, '')}</p>"
        diff = [[k, repr(a), repr(b)] for k, a, b in info["config_diff"]]
        out += (table(["setting", info["parent"], info["name"]], diff, sortable=False) if diff
                else '<p class="note">same config as the parent (or the parent run is gone)</p>')
    config = lin.get("config") or {}
    if config:
        out += "<details><summary>full config</summary>" + table(
            ["setting", "value"], [[k, repr(v)] for k, v in config.items()], sortable=False) + "</details>"
    return out


def _sections(info: dict, ctx: dict) -> list[tuple[str, str]]:
    """(title, html) of every section this run has data for."""
    cv, lin, have, out = info["cv"], info["lineage"] or {}, ctx["pages"], []
    metric = cv.get("metric") or lin.get("metric") or ctx["metric"]
    subs = [[r["id"], (r.get("created_utc") or "")[:19], r.get("cv"), r.get("public"), r.get("private"),
             r.get("message")] for r in info["rows"]]
    summary = f"<p>CV {esc(metric)}: <b>{num(lin.get('cv', cv.get('cv')))}</b> (folds {esc(lin.get('cv_folds'))})</p>"
    if cv.get("per_fold"):
        summary += table(["fold", "score"], [[k, v] for k, v in cv["per_fold"].items()])
    if subs:
        summary += "<p>submissions of this run:</p>" + table(["ledger id", "time", "CV", "public", "private",
                                                                  "message"], subs)
    out.append(("Summary", summary))
    out.append(("Lineage", _lineage_html(info, have)))
    if info["metrics"]:
        out.append(("Learning curves", image(charts.learning_curves(info["metrics"], metric), "learning curves")))
    tta = cv.get("tta") or {}
    if cv.get("per_class_f1"):
        out.append(("Per-class F1", image(charts.class_f1(cv["per_class_f1"], tta.get("per_class_f1")), "F1")))
    imgs = info["images"]
    if imgs.get("confusion") or imgs.get("confusion_tta"):
        names = {"confusion": "OOF", "confusion_tta": "OOF with TTA views"}
        out.append(("Confusion matrix", images_row([(charts.file_uri(p), names[k]) for k, p in imgs.items()
                                                    if k in names])))
    grids = [image(charts.file_uri(p), k) for k, p in imgs.items() if "misclassified" in k]
    if not grids and ctx.get("misclassified") and info.get("grid"):
        grids = [tiles(info["grid"])]
    if grids:
        out.append(("Misclassified (true -> predicted)", "".join(grids)))
    if lin.get("cv_schemes"):
        out.append(("Validation schemes", table(["scheme", "CV"], list(lin["cv_schemes"].items()))))
    pred = info["predict"]
    if pred:
        schemes = pred.get("schemes") or {"": {"cv": pred.get("cv"), "cv_tta": pred.get("cv_tta")}}
        judge = pred.get("judged_on")
        out.append(("Test-time augmentation", table(
            ["views", "method", "folds", "scheme", "CV without TTA", "CV with TTA", "kept"], [[
                ", ".join(pred.get("tta_views") or pred.get("views", [])), pred.get("method"),
                ", ".join(map(str, pred.get("folds", []))), name + (" (decides)" if name == judge else ""),
                s.get("cv"), s.get("cv_tta"), "yes" if pred.get("kept", True) else "no"]
                for name, s in schemes.items()], sortable=False)))
    if info["ensemble"]:
        weights, mcv = cv.get("weights") or lin.get("members") or {}, cv.get("members_cv") or {}
        if not isinstance(weights, dict):
            weights = {}
        rows = [[m, w, mcv.get(m)] for m, w in weights.items()]
        body = table(["member", "weight", f"CV {metric}"], rows) + \
            f"<p>method {esc(info['ensemble'].get('method'))}: members " + \
            ", ".join(_run_link(m, have, "") for m in weights) + "</p>"
        out.append(("Ensemble", body))
    if info["pseudo"]:
        rows = [[p.get("round"), p.get("parent"), p.get("threshold"), p.get("rows"), p.get("unique_ids"),
                 " ".join(f"{c}:{n}" for c, n in (p.get("per_class") or {}).items()), p.get("cv"), p.get("public")]
                for p in info["pseudo"]]
        out.append(("Pseudo-label rounds", table(["round", "parent", "threshold", "rows", "new ids", "per class",
                                                  "CV", "public"], rows)))
    if info["postprocess"]:
        thr, area = info["postprocess"]
        thr, area = (thr if isinstance(thr, list) else [thr]), (area if isinstance(area, list) else [area])
        rows = [[k, t, a] for k, (t, a) in enumerate(zip(thr, area * len(thr) if len(area) == 1 else area))]
        out.append(("Segmentation post-processing (tuned on OOF)", table(["channel", "threshold", "min area"], rows)
                    + f"<p>OOF score with a fixed threshold {num(cv.get('oof_fixed_threshold'))}, "
                      f"tuned {num(cv.get('oof_score'))}</p>"))
    if ctx.get("adval"):
        a, aug = ctx["adval"], (lin.get("config") or {}).get("valid_aug")
        out.append(("Adversarial validation", f"<p>train vs test AUC {num(a.get('auc'), 3)}; most test-like view "
                    f"<b>{esc(a.get('chosen_aug'))}</b> (AUC {num(a.get('auc_after'), 3)}); this run validates with "
                    f"<b>{esc(aug or 'none')}</b>. <a href=\"../adval.html\">grids and statistics</a></p>"))
    return out


def run_page(info: dict, ctx: dict) -> str:
    """One run: summary, lineage with config diff, curves, F1, confusion, mistakes, TTA, ensemble, pseudo, adval."""
    if not info["exists"]:
        body = (f'<p class="bad">runs/{esc(info["name"])} is not on this machine; what the ledger recorded:</p>'
                + _lineage_html(info, ctx["pages"]))
    else:
        body = "".join(f"<h2>{esc(t)}</h2>{h}" for t, h in _sections(info, ctx))
        if info.get("error"):
            body = f'<p class="bad">{esc(info["error"])}</p>' + body
    nav = [(t, "../" + h) for t, h in ctx.get("run_nav", ctx["nav"])]
    return page(f"{ctx['competition']}: {info['name']}", body, nav)


def diff_page(ctx: dict, a: dict, b: dict, d: dict) -> str:
    """How two submissions disagree (the numbers and images of `kit diff`)."""
    head = "".join(f"<p>{k}: <a href=\"index.html#s{r['id']}\">#{r['id']}</a> {esc((r.get('experiments') or [''])[0])}"
                   f" public {num(r.get('public'))} <span class=\"note\">{esc(r.get('message'))}</span></p>"
                   for k, r in (("a", a), ("b", b)))
    body = head + f"<p><b>{d['n_differ']}</b> of {d['n']} ids differ ({d['n_differ'] / max(d['n'], 1):.1%})</p>"
    if d.get("crosstab") is not None:
        ct = d["crosstab"]
        body += "<h2>Cross-tab (rows: a, columns: b)</h2>" + table(
            ["a \\ b", *map(str, ct.columns)], [[str(i), *map(int, r)] for i, r in zip(ct.index, ct.to_numpy())],
            sortable=False)
    if d.get("tiles"):
        body += f"<h2>Test images where they differ (first {len(d['tiles'])})</h2>" + tiles(d["tiles"])
    return page(f"{ctx['competition']}: #{a['id']} vs #{b['id']}", body, ctx["nav"])


def adval_page(ctx: dict, report: dict, grids: dict) -> str:
    """The competition's adversarial validation: AUC per augmentation, statistics that differ, image grids."""
    rows = [[aug, auc] for aug, auc in report.get("auc_by_aug", {}).items()]
    stats = [[s.get("stat"), s.get("ks"), s.get("train_mean"), s.get("test_mean")] for s in report.get("top_stats", [])]
    body = (f"<p>train vs test AUC {num(report.get('auc'), 3)} (0.5 = no shift); chosen validation view "
            f"<b>{esc(report.get('chosen_aug'))}</b>, AUC {num(report.get('auc_after'), 3)}</p>"
            + table(["train augmentation", "AUC vs test"], rows)
            + "<h2>Statistics that differ most</h2>" + table(["statistic", "KS", "train mean", "test mean"], stats)
            + "".join(f"<h2>{esc(k)}</h2>" + image(u, k) for k, u in grids.items()))
    return page(f"{ctx['competition']}: adversarial validation", body, ctx["nav"])
