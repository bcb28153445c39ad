"""Renders simulation results: the markdown table and the plot (matplotlib, Agg backend)."""

import math

COLUMNS = [
    ("policy", "policy", "{}"),
    ("ttft_slo_attainment_feasible", "TTFT SLO met (feasible)", "{:.2%}"),
    ("ttft_slo_attainment", "TTFT SLO met (all)", "{:.2%}"),
    ("itl_slo_attainment", "ITL SLO met", "{:.2%}"),
    ("ttft_p50_s", "TTFT p50 (s)", "{:.2f}"),
    ("ttft_p99_s", "TTFT p99 (s)", "{:.2f}"),
    ("cost_usd", "cost (USD)", "{:.2f}"),
    ("cost_vs_static_ondemand_min", "cost vs static min", "{:.1%}"),
    ("cost_vs_static_ondemand", "cost vs static peak", "{:.1%}"),
    ("lost_requests", "lost/retried", "{}"),
    ("rejected_requests", "rejected", "{}"),
    ("gpu_hours_ondemand", "GPU-h on-demand", "{:.2f}"),
    ("gpu_hours_spot", "GPU-h spot", "{:.2f}"),
]


def _cell(template: str, value) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return template.format(value)


def markdown_table(rows: list[dict]) -> str:
    return _table(COLUMNS, rows)


SUMMARY = [
    ("policy", "policy", "{}"),
    ("runs", "runs", "{}"),
    ("ttft_slo_attainment_feasible_mean", "TTFT met (feasible), mean", "{:.2%}"),
    ("ttft_slo_attainment_feasible_worst", "worst", "{:.2%}"),
    ("cost_vs_static_ondemand_min_mean", "cost vs static min, mean", "{:.1%}"),
    ("cost_vs_static_ondemand_min_worst", "worst", "{:.1%}"),
    ("lost_requests_worst", "lost/retried, worst", "{}"),
    ("preemptions_mean", "preemptions, mean", "{:.1f}"),
]


def _table(columns, rows: list[dict]) -> str:
    header = "| " + " | ".join(title for _, title, _ in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(_cell(fmt, row[key]) for key, _, fmt in columns) + " |" for row in rows]
    return "\n".join([header, rule, *body]) + "\n"


def summary_table(summary: list[dict]) -> str:
    return _table(SUMMARY, summary)


def plot(runs: list[list[dict]], timelines: dict, title: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(11, 9), gridspec_kw={"height_ratios": [3, 2]})
    load_axis = top.twinx()
    for name, timeline in timelines.items():
        total = [a + b for a, b in zip(timeline.on_demand, timeline.spot)]
        line, = top.step(timeline.minute, total, where="post", label=f"{name} (all)")
        if any(timeline.spot):
            top.step(timeline.minute, timeline.spot, where="post", linestyle=":", color=line.get_color(), label=f"{name} (spot)")
    first = next(iter(timelines.values()))
    load_axis.fill_between(first.minute, first.arrivals_per_s, step="post", alpha=0.15, color="grey")
    load_axis.set_ylabel("arrivals per second (grey)")
    top.set_xlabel("minute of trace")
    top.set_ylabel("replicas provisioned")
    top.set_title(title)
    top.legend(fontsize=7, ncol=2, loc="upper left")

    colours = {}
    for rows in runs:  # one point per policy and repeat: the spread over spot offsets and seeds
        for row in rows:
            point = (row["cost_vs_static_ondemand_min"], row["ttft_slo_attainment_feasible"])
            dot = bottom.scatter(*point, s=30, color=colours.get(row["policy"]), alpha=0.7,
                                 label=None if row["policy"] in colours else row["policy"])
            colours.setdefault(row["policy"], dot.get_facecolor()[0])
    bottom.axhline(0.99, color="green", linestyle="--", linewidth=1)
    bottom.axvline(0.4, color="green", linestyle="--", linewidth=1)
    bottom.set_xlabel("cost relative to static_ondemand_min (target <= 0.4)")
    bottom.set_ylabel("TTFT SLO attainment, feasible requests (target >= 0.99)")
    bottom.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
