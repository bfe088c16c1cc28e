"""summary.md: the Table-1 style EM / F1 grid, the alpha sweep, the intervals and the headroom.

`render_markdown` turns a summary as returned by `routerr1.report.aggregate.aggregate` into the
markdown report; `decoding_text` is its header line on how the routers decoded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from routerr1.bootstrap import DEFAULT_LEVEL
from routerr1.methods import AVERAGE, BASELINES, ROUTER_FAMILY, SWEEP_FAMILIES, UNSEEN_FAMILY
from routerr1.report.headroom import MAIN_STRATEGIES, fmt_cost
from routerr1.report.stats import family_aiq, sort_summary

__all__ = ["decoding_text", "render_markdown"]


def _md_cell(s: object) -> str:
    return str(s).replace("|", r"\|")


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |"]
    lines.append("|" + "|".join(["---"] * len(header)) + "|")
    lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
    return lines


def _grid(
    summary: pd.DataFrame, methods: list[str], benchmarks: list[str], cell
) -> tuple[list[list[str]], bool]:
    """Rows of cells per method; flags averages taken over fewer than all benchmarks."""
    idx = summary.set_index(["method", "benchmark"])
    rows, partial = [], False
    for m in methods:
        row = []
        for b in [*benchmarks, AVERAGE]:
            if (m, b) not in idx.index:
                row.append("–")
                continue
            r = idx.loc[(m, b)]
            text = cell(r)
            if b == AVERAGE and int(r["n_benchmarks"]) < len(benchmarks):
                text += " †"
                partial = True
            row.append(text)
        rows.append(row)
    return rows, partial


# One line per method family present, under the EM / F1 table.
_FAMILY_NOTES = {
    UNSEEN_FAMILY: "router-r1+unseen: the same trained routers, pool extended by `pool_unseen`",
    **{b.family: b.note for b in BASELINES.values() if b.note},
}


def _unseen_section(summary: pd.DataFrame) -> list[str]:
    """Each router on the training pool beside the same router with unseen models added."""
    page = summary[summary["benchmark"] == AVERAGE]
    unseen = page[page["family"] == UNSEEN_FAMILY].sort_values(["alpha", "method"])
    if unseen.empty:
        return []
    base = {r.alpha: r for r in page[page["family"] == ROUTER_FAMILY].itertuples(index=False)}
    rows = []
    for r in unseen.itertuples(index=False):
        b = base.get(r.alpha)
        calls = getattr(r, "unseen_calls", float("nan"))
        rows.append(
            [
                f"{r.alpha:g}",
                "–" if b is None else f"{b.em:.1f} / {fmt_cost(b.cost)}",
                f"{r.em:.1f} / {fmt_cost(r.cost)}",
                "–" if b is None else f"{r.em - b.em:+.1f}",
                f"{r.pool_calls:.2f}",
                "–" if pd.isna(calls) else f"{calls:.2f}",
            ]
        )
    header = ["α", "training pool", "+ unseen models", "Δ EM", "pool calls", "calls to unseen"]
    return [
        "## Unseen models (EM % / mean cost per question, macro average)",
        "",
        *_md_table(header, rows),
        "",
        "Same trained router; the pool is extended by `pool_unseen`, known to the router only "
        "through their descriptors (no retraining). Calls are per question.",
        "",
    ]


def _ci(est: float, lo: float, hi: float, fmt: str = "{:+.1f}") -> str:
    return f"{fmt.format(est)} [{fmt.format(lo)}, {fmt.format(hi)}]"


def _claims(r) -> str:
    """The comparisons whose interval excludes zero: only these count as claims."""
    out = []
    if r.d_em_best_lo > 0:
        out.append(f"EM above {r.best_single}")
    elif r.d_em_best_hi < 0:
        out.append(f"EM below {r.best_single}")
    if r.d_cost_best_hi < 0:
        out.append(f"cheaper than {r.best_single}")
    elif r.d_cost_best_lo > 0:
        out.append(f"dearer than {r.best_single}")
    if r.d_em_frontier_lo > 0:
        out.append("above the frontier")
    elif r.d_em_frontier_hi < 0:
        out.append("below the frontier")
    return "; ".join(out) or "none"


def _intervals_section(summary: pd.DataFrame, level: float) -> list[str]:
    """Every method against the single models, on the average page, with bootstrap intervals."""
    if "d_em_best" not in summary.columns:
        return []
    page = summary[(summary["benchmark"] == AVERAGE) & summary["d_em_best"].notna()]
    if page.empty:
        return []
    ci = f"{100 * level:g}%"
    rows = []
    for r in page.itertuples(index=False):
        seeds = int(getattr(r, "n_seeds", 1) or 1)
        spread = f" (EM {r.seed_em_min:.1f}–{r.seed_em_max:.1f})" if seeds > 1 else ""
        rows.append(
            [
                r.method,
                f"{seeds}{spread}",
                _ci(r.em, r.em_lo, r.em_hi, "{:.1f}"),
                _ci(r.cost, r.cost_lo, r.cost_hi, "{:.2e}"),
                _ci(r.d_em_best, r.d_em_best_lo, r.d_em_best_hi),
                _ci(r.d_cost_best, r.d_cost_best_lo, r.d_cost_best_hi, "{:+.2e}"),
                _ci(r.d_em_frontier, r.d_em_frontier_lo, r.d_em_frontier_hi),
                _claims(r),
            ]
        )
    best = ", ".join(sorted(set(page["best_single"])))
    header = [
        "method",
        "seeds",
        "EM %",
        "$ / question",
        "Δ EM vs best single",
        "Δ $ vs best single",
        "Δ EM vs frontier at same cost",
        "claims",
    ]
    return [
        f"## Against the single models ({ci} paired-bootstrap intervals, macro average)",
        "",
        *_md_table(header, rows),
        "",
        f"Best single model (highest EM on these questions): {best}. Frontier: the best EM a "
        "random mix of single models reaches at the method's cost (their upper cost-EM hull). "
        "Intervals resample the questions within each benchmark, with every method scored on "
        "the same draws; a router's training seeds are averaged per question (the seeds' own "
        "EM range is shown beside their count). **A claim counts only where its interval "
        "excludes zero**; per-benchmark intervals are in summary.csv.",
        "",
    ]


def _headroom_section(summary: pd.DataFrame, headroom: pd.DataFrame | None) -> list[str]:
    """Routers and the pool's headroom strategies on one cost-sorted table (average page)."""
    if headroom is None or headroom.empty:
        return []
    hr = headroom[headroom["benchmark"] == AVERAGE]
    entries = []
    for r in hr[hr["strategy"].isin(MAIN_STRATEGIES)].itertuples(index=False):
        note = "upper bound (reads gold)" if r.strategy == "oracle" else "held out"
        delta = _ci(r.d_frontier, r.d_frontier_lo, r.d_frontier_hi)
        entries.append(
            (r.cost, [f"headroom: {r.strategy}", f"{r.em:.1f}", fmt_cost(r.cost), delta, note])
        )
    page = summary[(summary["benchmark"] == AVERAGE) & summary["family"].isin(SWEEP_FAMILIES)]
    for r in page.itertuples(index=False):
        have = "d_em_frontier" in page.columns and pd.notna(r.d_em_frontier)
        delta = _ci(r.d_em_frontier, r.d_em_frontier_lo, r.d_em_frontier_hi) if have else "–"
        entries.append((r.cost, [r.method, f"{r.em:.1f}", fmt_cost(r.cost), delta, "router"]))
    if not entries:
        return []
    entries.sort(key=lambda e: e[0])
    return [
        "## Routers against the pool's headroom (macro average)",
        "",
        *_md_table(
            ["method", "EM %", "$ / question", "Δ EM vs frontier [CI]", ""], [e[1] for e in entries]
        ),
        "",
        "Headroom strategies use only the single models' answers, with every learned choice "
        "made on training folds (results/headroom.md). A router below a headroom strategy at a "
        "similar cost leaves gain a simple rule already gets.",
        "",
    ]


def decoding_text(decoding: Mapping[str, Any] | None) -> str:
    """One line for the summary header: how the routers decoded at evaluation."""
    if not decoding or decoding.get("decoding", "greedy") == "greedy":
        return "greedy"
    return (
        f"sampled (temperature {float(decoding['temperature']):g}, "
        f"top_p {float(decoding.get('top_p', 1.0)):g}, seed {decoding.get('sample_seed')})"
    )


def _data_section(manifest: Mapping[str, Any]) -> list[str]:
    """The evaluation sets actually used, then every configured benchmark that was skipped."""
    entries = list(manifest.get("benchmarks", []))
    used = [e for e in entries if e.get("status") == "ok"]
    skipped = [e for e in entries if e.get("status") != "ok"]
    out = []
    if used:
        rows = [
            [
                str(e["benchmark"]),
                str(e.get("split", "")),
                str(e.get("n", "")),
                str(e.get("requested", "")),
                str(e.get("available", "")),
            ]
            for e in used
        ]
        out += ["## Benchmarks", ""]
        out += _md_table(["benchmark", "split", "questions", "asked", "in split"], rows)
        short = [e["benchmark"] for e in used if int(e.get("n", 0)) < int(e.get("requested", 0))]
        if short:
            out += ["", f"Evaluated on every question it has: {', '.join(short)}."]
        out += [""]
    out += ["## Skipped benchmarks", ""]
    if skipped:
        out += [f"- **{e['benchmark']}**: {e.get('reason', 'no reason given')}" for e in skipped]
        out += ["", "These are in the config but not in the data source; no method ran on them."]
    else:
        out += ["None: every configured evaluation benchmark was found."]
    return out + [""]


def render_markdown(
    summary: pd.DataFrame,
    manifest: Mapping[str, Any] | None = None,
    decoding: Mapping[str, Any] | None = None,
    headroom: pd.DataFrame | None = None,
    level: float = DEFAULT_LEVEL,
) -> str:
    """Markdown report from a summary as returned by `aggregate`.

    With ``decoding`` the header says how the routers decoded; with ``manifest`` (the data
    stage's eval_manifest.json) it lists the evaluation sets and, under "Skipped benchmarks",
    each configured benchmark the data source lacked, with the reason. Summaries with interval
    columns (`bootstrap_intervals`) get the comparison with the single models; with
    ``headroom`` (results/headroom.csv) the routers are placed against the pool's headroom.
    """
    summary = sort_summary(summary)
    benchmarks = sorted(b for b in summary["benchmark"].unique() if b != AVERAGE)
    methods = list(dict.fromkeys(summary["method"]))
    footnote = "† averaged over only the benchmarks this method was evaluated on."
    out = ["# Evaluation summary", ""]
    if decoding is not None:
        out += [
            f"Router decoding at evaluation: {decoding_text(decoding)}. "
            "Pool models decode as configured (greedy locally).",
            "",
        ]
    if manifest is not None:
        out += _data_section(manifest)

    out += ["## EM / F1 (%)", ""]
    rows, partial = _grid(summary, methods, benchmarks, lambda r: f"{r.em:.1f} / {r.f1:.1f}")
    out += _md_table(
        ["method", *benchmarks, "avg"], [[m, *r] for m, r in zip(methods, rows, strict=True)]
    )
    out += ["", "avg = unweighted mean over benchmarks (macro average).", ""]
    notes = [_FAMILY_NOTES[f] for f in dict.fromkeys(summary["family"]) if f in _FAMILY_NOTES]
    if notes:
        out += [f"- {n}" for n in notes] + [""]
    if partial:
        out += [footnote, ""]

    out += ["## Router-R1 cost sweep (EM % / mean cost per question)", ""]
    routers = summary[(summary["family"] == ROUTER_FAMILY) & (summary["benchmark"] == AVERAGE)]
    routers = routers.sort_values(["alpha", "method"])
    if routers.empty:
        out += ["(no router-r1 rows)", ""]
    else:
        r_methods = list(routers["method"])
        rows, partial = _grid(
            summary, r_methods, benchmarks, lambda r: f"{r.em:.1f} / {fmt_cost(r.cost)}"
        )
        table = [
            [f"{a:g}", m, *r] for a, m, r in zip(routers["alpha"], r_methods, rows, strict=True)
        ]
        out += _md_table(["α", "method", *benchmarks, "avg"], table) + [""]
        if partial:
            out += [footnote, ""]

    out += _intervals_section(summary, level)
    out += _headroom_section(summary, headroom)
    out += _unseen_section(summary)

    out += ["## AIQ per family (average page)", ""]
    fam = family_aiq(summary, AVERAGE)
    out += _md_table(
        ["family", "points", "aiq"],
        [[f, str(n), f"{a:.1f}"] for f, n, a in fam.itertuples(index=False)],
    )
    out += [
        "",
        "aiq = mean EM % of the family's non-decreasing upper cost-EM hull (with free abstention "
        "at cost 0) over the min..max mean cost of all methods; see `routerr1.frontier.aiq`.",
        "",
    ]

    out += ["## Pool calls per question (macro average)", ""]
    for r in summary[summary["benchmark"] == AVERAGE].itertuples(index=False):
        out.append(
            f"- {r.method}: {r.pool_calls:.2f} pool calls, "
            f"{r.invalid_actions:.2f} invalid actions, {int(r.pool_errors)} pool errors in total"
        )
    return "\n".join(out) + "\n"
