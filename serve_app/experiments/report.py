"""An experiment's report, as GrowthBook, Statsig and Optimizely show one: per arm, its units and requests,
resolution rate (95% Wilson), rating mean (t interval), escalation rate, cost per resolved request and
latency p50/p95; per arm but control, the difference to control with a 95% interval and p-value, the
always-valid sequential p-value over daily reads (mSPRT), and a sample-ratio-mismatch check of the split.

Rates are per request: the resolution rate is over requests with feedback (`POST /v1/feedback` or the
agent's at session end), the escalation rate over routed requests. Where the unit is a tenant or session,
a unit's requests are correlated (one tenant's questions resolve alike), so the unit is the independent
observation: every interval, test and sequential read then comes from the delta method over units
(`stats.UnitSums`); request-unit experiments keep the per-request Wilson, z, Welch and mSPRT figures.
`analysis` in the report says which (`request` or the unit).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from serve_app.experiments import stats
from serve_app.experiments.config import ExperimentSettings


def build_report(
    name: str,
    arm_rows: Sequence[Mapping[str, Any]],
    daily_rows: Sequence[Mapping[str, Any]],
    experiment: ExperimentSettings | None = None,
    tau: float = stats.DEFAULT_TAU,
) -> dict[str, Any]:
    """The report of experiment `name` from `store.report_rows`; `experiment` gives the weights and
    control (without it: equal weights, control the first arm by name)."""
    rows = {r["arm"]: r for r in arm_rows}
    arms = list(experiment.arms) if experiment else sorted(rows)
    for arm in sorted(rows):
        if arm not in arms:
            arms.append(arm)  # an arm since removed from the configuration still has its rows
    control = experiment.control_arm if experiment else (arms[0] if arms else None)
    weights = dict(experiment.arms) if experiment else {a: 1.0 for a in arms}
    analysis = analysis_unit(arm_rows, experiment)
    per_arm = {a: _arm(rows.get(a, {}), analysis != "request") for a in arms}
    comparisons = {}
    if control is not None:
        base = rows.get(control, {})
        for arm in arms:
            if arm != control:
                other = rows.get(arm, {})
                if analysis == "request":
                    comparisons[arm] = _compare(base, other, _daily_reads(daily_rows), control, arm, tau)
                else:
                    series = _unit_reads(daily_rows, control, arm)
                    comparisons[arm] = _compare_units(base, other, series, tau)
    ratio = stats.srm({a: int(rows.get(a, {}).get("units", 0)) for a in arms}, weights)
    return {
        "experiment": name,
        "configured": experiment.model_dump(mode="json") if experiment else None,
        "control": control,
        "analysis": analysis,
        "arms": per_arm,
        "vs_control": comparisons,
        "srm": ratio.to_dict(),
        "days": len({r["day"] for r in daily_rows}),
        "daily": _daily_rates(daily_rows),
    }


def analysis_unit(arm_rows: Sequence[Mapping[str, Any]], experiment: ExperimentSettings | None) -> str:
    """What the report treats as independent: `request`, or the experiment's unit (tenant, session).
    Without the configuration (an experiment since removed), units are inferred: any arm whose units are
    fewer than its requests has units of several requests. Rows without unit sums (`res_n`: not from
    `store.report_rows` or `simulate.aggregate`) can only be read per request."""
    if not any("res_n" in r for r in arm_rows):
        return "request"
    if experiment is not None:
        return experiment.unit
    return "unit" if any(_n(r, "units") < _n(r, "requests") for r in arm_rows) else "request"


def _n(row: Mapping[str, Any], key: str) -> int:
    return int(row.get(key) or 0)


def _sums(row: Mapping[str, Any], prefix: str) -> stats.UnitSums:
    return stats.UnitSums.from_row(row, prefix)


def _arm(row: Mapping[str, Any], by_unit: bool) -> dict[str, Any]:
    resolved, fed = _n(row, "resolved"), _n(row, "with_feedback")
    ratings = stats.Moments(_n(row, "ratings"), row.get("rating_mean") or 0.0, row.get("rating_var") or 0.0)
    cost = float(row.get("cost_usd") or 0.0)
    if by_unit:
        resolution = stats.clustered_rate(_sums(row, "res"))
        rating = stats.clustered_mean(_sums(row, "rat"), floor=1.0, ceiling=5.0)
        escalation = stats.clustered_rate(_sums(row, "esc"))
    else:
        resolution = stats.wilson(resolved, fed)
        rating = stats.mean_interval(ratings)
        escalation = stats.wilson(_n(row, "escalated"), _n(row, "with_routing"))
    per_resolved = stats.clustered_mean(_sums(row, "cpr"), floor=0.0)  # a request is its own unit alike
    return {
        "units": _n(row, "units"),
        "requests": _n(row, "requests"),
        "with_feedback": fed,
        "resolved": resolved,
        "resolution_rate": resolution.to_dict(),
        "ratings": ratings.n,
        "rating": rating.to_dict(),
        "escalation_rate": escalation.to_dict(),
        "cost_usd": round(cost, 8),
        "cost_per_resolved_usd": round(cost / resolved, 8) if resolved else None,
        "cost_per_resolved": per_resolved.to_dict(),
        "latency_p50_ms": row.get("p50_ms"),
        "latency_p95_ms": row.get("p95_ms"),
    }


def _compare(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    reads: dict[str, list[tuple[int, int]]],
    control: str,
    arm: str,
    tau: float,
) -> dict[str, Any]:
    xa, na, xb, nb = _n(a, "resolved"), _n(a, "with_feedback"), _n(b, "resolved"), _n(b, "with_feedback")
    moments = [
        stats.Moments(_n(r, "ratings"), r.get("rating_mean") or 0.0, r.get("rating_var") or 0.0)
        for r in (a, b)
    ]
    now = stats.msprt(xa, na, xb, nb, tau)
    series = [
        (ca[0], ca[1], cb[0], cb[1])
        for ca, cb in zip(reads.get(control, []), reads.get(arm, []), strict=False)
    ]
    return {
        "resolution_rate": stats.two_proportions(xa, na, xb, nb).to_dict(),
        "sequential": {**now.to_dict(), "p_value": min(now.p_value, stats.sequential_p(series, tau))},
        "rating": stats.welch(*moments).to_dict(),
        "escalation_rate": stats.two_proportions(
            _n(a, "escalated"), _n(a, "with_routing"), _n(b, "escalated"), _n(b, "with_routing")
        ).to_dict(),
        "cost_per_resolved": stats.clustered_difference(_sums(a, "cpr"), _sums(b, "cpr")).to_dict(),
    }


def _compare_units(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    series: list[tuple[stats.UnitSums, stats.UnitSums]],
    tau: float,
) -> dict[str, Any]:
    """The difference to control with the unit as the independent observation (delta method)."""
    res_a, res_b = _sums(a, "res"), _sums(b, "res")
    now = stats.clustered_msprt(res_a, res_b, tau)
    p_value = min(now.p_value, stats.clustered_sequential_p(series, tau))
    return {
        "resolution_rate": stats.clustered_difference(res_a, res_b).to_dict(),
        "sequential": {**now.to_dict(), "p_value": p_value},
        "rating": stats.clustered_difference(_sums(a, "rat"), _sums(b, "rat")).to_dict(),
        "escalation_rate": stats.clustered_difference(_sums(a, "esc"), _sums(b, "esc")).to_dict(),
        "cost_per_resolved": stats.clustered_difference(_sums(a, "cpr"), _sums(b, "cpr")).to_dict(),
    }


def _unit_reads(
    daily_rows: Sequence[Mapping[str, Any]], control: str, arm: str
) -> list[tuple[stats.UnitSums, stats.UnitSums]]:
    """(control, arm) cumulative resolution unit sums at the end of every day both have a read."""
    by_day: dict[Any, dict[str, stats.UnitSums]] = defaultdict(dict)
    for r in daily_rows:
        if "cum_res_n" in r:
            by_day[r["day"]][r["arm"]] = _sums(r, "cum_res")
    return [(d[control], d[arm]) for _, d in sorted(by_day.items()) if control in d and arm in d]


def _daily_reads(daily_rows: Sequence[Mapping[str, Any]]) -> dict[str, list[tuple[int, int]]]:
    """Cumulative (resolved, with feedback) per arm at the end of every day of the experiment."""
    days = sorted({r["day"] for r in daily_rows})
    counts: dict[tuple[Any, str], tuple[int, int]] = {
        (r["day"], r["arm"]): (_n(r, "resolved"), _n(r, "with_feedback")) for r in daily_rows
    }
    out: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for arm in {r["arm"] for r in daily_rows}:
        x = n = 0
        for day in days:
            dx, dn = counts.get((day, arm), (0, 0))
            x, n = x + dx, n + dn
            out[arm].append((x, n))
    return out


def _daily_rates(daily_rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per day and arm: the cumulative resolution rate with its Wilson interval (what a plot shows)."""
    days = sorted({r["day"] for r in daily_rows})
    reads = _daily_reads(daily_rows)
    return [
        {"day": str(day), "arm": arm, **stats.wilson(*series[i]).to_dict()}
        for arm, series in sorted(reads.items())
        for i, day in enumerate(days)
    ]


def _fmt_rate(iv: Mapping[str, Any], scale: float = 100.0, unit: str = "%") -> str:
    if iv.get("estimate") is None:
        return "-"
    if iv.get("low") is None:
        return f"{iv['estimate'] * scale:.1f}{unit}"
    return f"{iv['estimate'] * scale:.1f}{unit} [{iv['low'] * scale:.1f}, {iv['high'] * scale:.1f}]"


def format_report(report: dict[str, Any]) -> str:
    """The report as a text table (the CLI prints this, then the report as one JSON line)."""
    unit = report.get("analysis", "request")
    over = "per request" if unit == "request" else f"over {unit}s (delta method)"
    lines = [
        f"experiment {report['experiment']}  control={report['control']}  days={report['days']}"
        f"  intervals {over}"
    ]
    head = (
        f"{'arm':<14}{'units':>7}{'reqs':>7}{'resolved (95% CI)':>24}{'rating (95% CI)':>20}"
        f"{'escalated':>11}{'$/resolved':>12}{'p50 ms':>9}{'p95 ms':>9}"
    )
    lines.append(head)
    for arm, a in report["arms"].items():
        cpr = a["cost_per_resolved_usd"]
        escalated = _fmt_rate({"estimate": a["escalation_rate"]["estimate"]})
        lat = [a["latency_p50_ms"], a["latency_p95_ms"]]
        lines.append(
            f"{arm:<14}{a['units']:>7}{a['requests']:>7}{_fmt_rate(a['resolution_rate']):>24}"
            f"{_fmt_rate(a['rating'], 1.0, ''):>20}{escalated:>11}"
            f"{'-' if cpr is None else f'{cpr:.6f}':>12}"
            + "".join(f"{'-' if v is None else f'{v:.0f}':>9}" for v in lat)
        )
    for arm, c in report["vs_control"].items():
        r, s = c["resolution_rate"], c["sequential"]
        if r["estimate"] is None:
            why = "no feedback yet" if unit == "request" else f"fewer than 2 {unit}s with feedback an arm"
            lines.append(f"{arm} vs {report['control']}: {why}")
            continue
        seq = "-" if s["low"] is None else f"[{s['low'] * 100:+.1f}, {s['high'] * 100:+.1f}]"
        lines.append(
            f"{arm} vs {report['control']}: resolution {r['estimate'] * 100:+.1f} pts"
            f" [{r['low'] * 100:+.1f}, {r['high'] * 100:+.1f}] p={r['p_value']:.4g};"
            f" sequential p={s['p_value']:.4g} always-valid CI {seq}"
        )
    srm = report["srm"]
    flag = "MISMATCH: the split is broken" if srm["mismatch"] else "ok"
    lines.append(
        f"sample ratio: units {srm['observed']} chi2={srm['chi2']:.2f} p={srm['p_value']:.4g} {flag}"
    )
    lines.append(json.dumps(report, default=str))
    return "\n".join(lines)
