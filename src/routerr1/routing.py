"""How the routers route: first calls, calls per question, what a second call changes.

Input: router evaluation rows (``results/eval/router/``, ``router_unseen/``, ``prompt_router/``),
one per question (and training seed). Each row's pool calls come from its ``call_models`` /
``call_replies`` columns; rows written before those columns existed are read from the
trajectory text instead (each ``<search>`` followed by the ``<information>`` we injected; an
"Invalid search" observation is not a call, a "Model X failed" one is a call with no reply).

Per router (the seeds of one router pooled) and benchmark, plus "all" (every question pooled):

- the share of questions whose **first call** went to each pool model (or that made none);
- **calls per question**: the mean, and the shares with 0, 1, 2 and 3+ calls;
- over questions with 2+ calls, how often the final answer **differs from the first call's
  reply** (normalized as EM does), and whether that made it better (EM 0 -> 1) or worse
  (1 -> 0). The first reply stands for "what the router would have answered had it stopped
  there"; a router that relays one reply reproduces it.

Plus five example trajectories per router (seeded, spread over benchmarks, multi-call first).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from routerr1.methods import ROUTING_FAMILIES
from routerr1.metrics import exact_match, normalize_answer
from routerr1.parse import ModelNameResolver, parse_search

__all__ = [
    "ALL",
    "NO_CALL",
    "behaviour",
    "calls_of",
    "example_rows",
    "first_calls",
    "group_diversity",
    "plot_routing",
    "render_routing",
    "trajectory_calls",
    "write_routing",
]

ALL = "all"  # every question of the router pooled over benchmarks
NO_CALL = "(no call)"
_FAMILY_RANK = {f: i for i, f in enumerate(ROUTING_FAMILIES)}
_PAIR = re.compile(
    r"<search>((?:(?!<search>).)*?)</search>\s*<information>(.*?)</information>", re.DOTALL
)
_FAILED = re.compile(r"^Model (.+?) failed: ")
_NEEDED = ("method", "family", "benchmark", "qid", "golden_answers", "prediction", "em")
EXAMPLES = 5
_EXAMPLE_CHARS = 1500


def trajectory_calls(
    text: str | None, resolver: ModelNameResolver | None = None
) -> list[tuple[str, str]]:
    """(model, reply) per pool call, read from a trajectory's text (for older files).

    The model is the pool name the resolver finds for what the policy wrote (the text before
    ':' without one); the reply is "" for a failed call.
    """
    calls = []
    for m in _PAIR.finditer(text or ""):
        info = m.group(2).strip()
        if info.startswith("Invalid search:"):
            continue  # our guidance after an unusable <search>: no pool call was made
        content = m.group(1)
        parsed = parse_search(content, resolver) if resolver is not None else None
        if parsed is not None and parsed.model is not None:
            model = parsed.model
        else:
            model = content.split(":", 1)[0].strip()
        failed = _FAILED.match(info)
        calls.append((model, "" if failed else info))
    return calls


def _listed(value) -> list | None:
    """A list cell as a Python list; None for a missing cell (older files)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return [str(v) for v in value]


def calls_of(row: Mapping, resolver: ModelNameResolver | None = None) -> list[tuple[str, str]]:
    """(model, reply) per pool call of one evaluation row, from its columns or its text."""
    models, replies = _listed(row.get("call_models")), _listed(row.get("call_replies"))
    if models is not None and replies is not None:
        return list(zip(models, replies, strict=True))
    return trajectory_calls(row.get("trajectory"), resolver)


def first_calls(rows: pd.DataFrame, resolver: ModelNameResolver | None = None) -> pd.Series:
    """The model each row called first (``NO_CALL`` for none), indexed like ``rows``."""
    return pd.Series(
        [c[0][0] if (c := calls_of(row, resolver)) else NO_CALL for row in rows.to_dict("records")],
        index=rows.index,
        name="first call",
        dtype=object,
    )


def _check(rows: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in _NEEDED if c not in rows.columns]
    if missing:
        raise ValueError(f"router rows: missing column(s) {', '.join(missing)}")
    if "trajectory" not in rows.columns and "call_models" not in rows.columns:
        raise ValueError("router rows: need 'call_models'/'call_replies' or 'trajectory'")
    return rows


def _question_facts(rows: pd.DataFrame, resolver: ModelNameResolver | None) -> pd.DataFrame:
    """One line per row: its calls, first model, and the first reply's EM and agreement."""
    facts = []
    for row in rows.to_dict("records"):
        calls = calls_of(row, resolver)
        golds = [str(g) for g in row["golden_answers"]]
        first_reply = calls[0][1] if calls else None
        first_em = exact_match(first_reply, golds) if calls else np.nan
        final = row["prediction"] if isinstance(row["prediction"], str) else ""
        facts.append(
            {
                "calls": calls,
                "n_calls": len(calls),
                "first_model": calls[0][0] if calls else NO_CALL,
                "second_other_model": len(calls) >= 2 and calls[1][0] != calls[0][0],
                "first_em": first_em,
                "changed": bool(calls)
                and normalize_answer(final) != normalize_answer(first_reply or ""),
            }
        )
    return pd.DataFrame(facts, index=rows.index)


def _router_order(rows: pd.DataFrame) -> list[str]:
    ids = rows.drop_duplicates("method")
    # alpha is None for the prompt router (an object column once files are concatenated)
    alpha = pd.to_numeric(ids.get("alpha", pd.Series(np.nan, index=ids.index)), errors="coerce")
    keyed = sorted(
        zip(ids["method"], ids["family"], alpha.fillna(-1.0), strict=True),
        key=lambda r: (_FAMILY_RANK.get(r[1], 99), float(r[2]), r[0]),
    )
    return [m for m, _, _ in keyed]


def _resolver(pool_names: Sequence[str], aliases: Mapping | None) -> ModelNameResolver | None:
    return ModelNameResolver(list(pool_names), aliases or {}) if pool_names else None


def behaviour(
    rows: pd.DataFrame, pool_names: Sequence[str] = (), aliases: Mapping | None = None
) -> pd.DataFrame:
    """One row per router and page (each benchmark, then "all"): first-call shares (columns
    ``first:<model>``), calls per question, and the second-call outcomes (counts)."""
    rows = _check(rows).reset_index(drop=True)
    rows = rows[rows["family"].isin(ROUTING_FAMILIES)]
    if rows.empty:
        raise ValueError(f"router rows: no rows of the families {list(ROUTING_FAMILIES)}")
    resolver = _resolver(pool_names, aliases)
    facts = _question_facts(rows, resolver)
    data = pd.concat([rows, facts], axis=1)
    models = list(pool_names) + sorted(set(data["first_model"]) - set(pool_names) - {NO_CALL})
    out = []
    for method in _router_order(data):
        mine = data[data["method"] == method]
        seeds = mine["seed"].fillna(-1).nunique() if "seed" in mine.columns else 1
        for page in [*sorted(set(mine["benchmark"].astype(str))), ALL]:
            part = mine if page == ALL else mine[mine["benchmark"].astype(str) == page]
            n = len(part)
            multi = part[part["n_calls"] >= 2]
            first = part["first_model"].value_counts()
            rec = {
                "method": method,
                "family": part["family"].iloc[0],
                "benchmark": page,
                "n": n,
                "n_seeds": int(seeds),
                "em": 100 * float(part["em"].mean()),
                "calls_mean": float(part["n_calls"].mean()),
                "calls_0": float((part["n_calls"] == 0).mean()),
                "calls_1": float((part["n_calls"] == 1).mean()),
                "calls_2": float((part["n_calls"] == 2).mean()),
                "calls_3plus": float((part["n_calls"] >= 3).mean()),
                **{f"first:{m}": float(first.get(m, 0)) / n for m in models},
                f"first:{NO_CALL}": float(first.get(NO_CALL, 0)) / n,
                "multi": len(multi),
                "multi_other_model": int(multi["second_other_model"].sum()),
                "changed": int(multi["changed"].sum()),
                "better": int((multi["em"] > multi["first_em"]).sum()),
                "worse": int((multi["em"] < multi["first_em"]).sum()),
                "calls_parsed_mismatch": int(
                    (part["n_calls"] != part["pool_calls"]).sum()
                    if "pool_calls" in part.columns
                    else 0
                ),
            }
            out.append(rec)
    return pd.DataFrame(out)


def group_diversity(rows: pd.DataFrame, resolver: ModelNameResolver | None = None) -> pd.DataFrame:
    """Per benchmark (then "all"): how often sampled rollouts of one question differ.

    ``rows`` hold several rollouts per ``qid`` (a GRPO group each). A group with one first-call
    model and one EM gives GRPO no advantage to learn from; columns: ``groups``, the shares of
    groups with ``mixed_routes`` (2+ first-call models) and ``em_spread`` (EM differs), and the
    mean ``routes_per_group``.
    """
    missing = [c for c in ("benchmark", "qid", "em") if c not in rows.columns]
    if missing:
        raise ValueError(f"rollout rows: missing column(s) {', '.join(missing)}")
    groups = (
        rows.assign(first_model=first_calls(rows, resolver))
        .groupby(["benchmark", "qid"])
        .agg(routes=("first_model", "nunique"), em_lo=("em", "min"), em_hi=("em", "max"))
    )
    groups["mixed_routes"] = groups["routes"] > 1
    groups["em_spread"] = groups["em_hi"] > groups["em_lo"]
    pages = [*sorted(set(groups.index.get_level_values("benchmark").astype(str))), ALL]
    out = []
    for page in pages:
        part = groups if page == ALL else groups.xs(page, level="benchmark")
        out.append(
            {
                "benchmark": page,
                "groups": len(part),
                "mixed_routes": float(part["mixed_routes"].mean()),
                "em_spread": float(part["em_spread"].mean()),
                "routes_per_group": float(part["routes"].mean()),
            }
        )
    return pd.DataFrame(out)


def example_rows(rows: pd.DataFrame, method: str, k: int = EXAMPLES, seed: int = 0):
    """``k`` rows of one router: seeded, one benchmark after another, multi-call ones first;
    from one training seed so no question repeats."""
    mine = rows[rows["method"] == method]
    if "seed" in mine.columns and mine["seed"].notna().any():
        first_seed = mine["seed"].fillna(-1).min()
        mine = mine[mine["seed"].fillna(-1) == first_seed]
    rng = np.random.default_rng(seed)
    queues = []
    for bench in sorted(set(mine["benchmark"].astype(str))):
        part = mine[mine["benchmark"].astype(str) == bench]
        part = part.iloc[rng.permutation(len(part))]
        calls = part["pool_calls"] if "pool_calls" in part.columns else pd.Series(0, part.index)
        queues.append(list(part.index[np.argsort((calls < 2).to_numpy(), kind="stable")]))
    picked = []
    while len(picked) < k and any(queues):
        for q in queues:
            if q and len(picked) < k:
                picked.append(q.pop(0))
    return mine.loc[picked]


# --------------------------------------------------------------------------- markdown


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _md(s: object) -> str:
    return str(s).replace("|", r"\|").replace("\n", " ")


def render_routing(
    stats: pd.DataFrame,
    rows: pd.DataFrame,
    seed: int = 0,
    resolver: ModelNameResolver | None = None,
) -> str:
    """Markdown: a table per page (routers x behaviour), then example trajectories."""
    first_cols = [c for c in stats.columns if c.startswith("first:")]
    used = [c for c in first_cols if stats[c].sum() > 0]
    out = [
        "# Routing behaviour",
        "",
        "Per router: where its first call goes, how many calls it makes per question, and "
        "whether a second call changes the answer (the final answer against the first call's "
        "reply, normalized as EM does; better = EM 0 -> 1, worse = 1 -> 0). Seeds of one router "
        "are pooled: n counts its questions once per seed. Shares are of those; second-call "
        "counts are of the ones with 2+ calls.",
        "",
    ]
    for page in [ALL, *sorted(set(stats["benchmark"]) - {ALL})]:
        part = stats[stats["benchmark"] == page]
        if part.empty:
            continue
        out += [f"## {'All benchmarks' if page == ALL else page}", ""]
        header = ["router", "n", "EM %", "calls / q", "0 / 1 / 2 / 3+ calls"]
        header += [f"first → {c.removeprefix('first:')}" for c in used]
        header += ["2+ calls", "answer changed", "better", "worse"]
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" * len(header))
        for r in part.to_dict("records"):
            cells = [
                r["method"] + (f" ({r['n_seeds']} seeds)" if r["n_seeds"] > 1 else ""),
                str(r["n"]),
                f"{r['em']:.1f}",
                f"{r['calls_mean']:.2f}",
                " / ".join(_pct(r[c]) for c in ("calls_0", "calls_1", "calls_2", "calls_3plus")),
                *[_pct(r[c]) for c in used],
                str(r["multi"]),
                str(r["changed"]),
                str(r["better"]),
                str(r["worse"]),
            ]
            out.append("| " + " | ".join(_md(c) for c in cells) + " |")
        out.append("")
    mism = int(stats.loc[stats["benchmark"] == ALL, "calls_parsed_mismatch"].sum())
    if mism:
        out += [
            f"Note: for {mism} question(s) the calls read from the trajectory text differ from "
            "the recorded pool_calls (files older than the call columns).",
            "",
        ]
    out += ["## Example trajectories", ""]
    for method in dict.fromkeys(stats["method"]):
        out += [f"### {method}", ""]
        for row in example_rows(rows, method, seed=seed).to_dict("records"):
            calls = calls_of(row, resolver)
            route = " → ".join(m for m, _ in calls) or NO_CALL
            golds = ", ".join(str(g) for g in row["golden_answers"])
            out.append(
                f"- **{row['benchmark']} {row['qid']}**: calls {route}; answer "
                f"{row['prediction']!r} (gold: {golds}; EM {int(row['em'])})"
            )
            text = str(row.get("trajectory") or "")
            if len(text) > _EXAMPLE_CHARS:
                text = text[:_EXAMPLE_CHARS] + " …"
            question = str(row.get("question", "")).replace("\n", " ")
            out += ["", "  ```text", f"  Q: {question}"]
            out += [f"  {line}" for line in text.replace("```", "'''").splitlines()]
            out += ["  ```", ""]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- figure


def plot_routing(stats: pd.DataFrame, pdf_path: str | Path) -> None:
    """One page per benchmark ("all" first): first-call shares, calls per question and the
    second-call outcomes, one bar per router."""
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure

    from routerr1.io import atomic_path

    first_cols = [c for c in stats.columns if c.startswith("first:") and stats[c].sum() > 0]
    pages = [ALL, *sorted(set(stats["benchmark"]) - {ALL})]
    with atomic_path(pdf_path) as tmp, PdfPages(tmp, metadata={"CreationDate": None}) as pdf:
        for page in pages:
            part = stats[stats["benchmark"] == page].reset_index(drop=True)
            if part.empty:
                continue
            fig = Figure(figsize=(14, 2.4 + 0.45 * len(part)), layout="constrained")
            axes = fig.subplots(1, 3, sharey=True)
            y = np.arange(len(part))
            labels = [c.removeprefix("first:") for c in first_cols]
            shades = [f"C{i % 10}" if m != NO_CALL else "0.8" for i, m in enumerate(labels)]
            _stacked(axes[0], y, part, first_cols, labels, shades)
            axes[0].set_title("first call goes to")
            calls = ["calls_0", "calls_1", "calls_2", "calls_3plus"]
            _stacked(axes[1], y, part, calls, ["0 calls", "1", "2", "3+"])
            axes[1].set_title("calls per question")
            multi = part["multi"].clip(lower=1).to_numpy(dtype=float)
            outcome = pd.DataFrame(
                {
                    "better": part["better"] / multi,
                    "worse": part["worse"] / multi,
                    "changed, same EM": (part["changed"] - part["better"] - part["worse"]) / multi,
                    "unchanged": (part["multi"] - part["changed"]) / multi,
                }
            )
            colors = ["tab:green", "tab:red", "tab:gray", "0.85"]
            _stacked(axes[2], y, outcome, list(outcome.columns), list(outcome.columns), colors)
            axes[2].set_title("questions with 2+ calls: final vs first reply")
            names = zip(part["method"], part["n"], strict=True)
            axes[0].set_yticks(y, [f"{m} (n={n})" for m, n in names])
            axes[0].invert_yaxis()
            fig.suptitle(f"Routing behaviour: {'all benchmarks' if page == ALL else page}")
            pdf.savefig(fig)


def _stacked(ax, y, frame: pd.DataFrame, cols: list[str], labels: list[str], colors=None) -> None:
    left = np.zeros(len(frame))
    for i, (col, label) in enumerate(zip(cols, labels, strict=True)):
        vals = frame[col].to_numpy(dtype=float)
        color = colors[i] if colors else f"C{i % 10}"
        ax.barh(y, vals, left=left, color=color, label=label)
        left += vals
    ax.set_xlim(0, 1)
    ax.set_xlabel("share")
    # below the bars, so it never covers them
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=3, frameon=False)


# --------------------------------------------------------------------------- the rule


def write_routing(
    eval_paths: Sequence[str | Path],
    md_path: str | Path,
    pdf_path: str | Path,
    csv_path: str | Path,
    pool_names: Sequence[str] = (),
    aliases: Mapping | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Read router evaluation parquets; write the markdown, the figure and the csv."""
    from routerr1.io import atomic_path

    if not eval_paths:
        raise ValueError("eval_paths: no router evaluation files")
    rows = pd.concat([pd.read_parquet(p) for p in eval_paths], ignore_index=True)
    stats = behaviour(rows, pool_names, aliases)
    with atomic_path(csv_path) as tmp:
        stats.to_csv(tmp, index=False)
    text = render_routing(stats, rows, seed, _resolver(pool_names, aliases))
    with atomic_path(md_path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    plot_routing(stats, pdf_path)
    return stats
