"""Renders simulation results: the markdown table and the plot (matplotlib, Agg backend)."""

import math

COLUMNS = [
    ("policy", "policy", "{}"),
    ("ttft_slo_attainment", "TTFT SLO met", "{:.2%}"),
    ("itl_slo_attainment", "ITL SLO met", "{:.2%}"),
    ("ttft_p50_s", "TTFT p50 (s)", "{:.2f}"),
    ("ttft_p99_s", "TTFT p99 (s)", "{:.2f}"),
    ("cost_usd", "cost (USD)", "{:.2f}"),
    ("cost_vs_static_ondemand", "cost vs static", "{:.1%}"),
    ("lost_requests", "lost/retried", "{}"),
    ("gpu_hours_ondemand", "GPU-h on-demand", "{:.2f}"),
    ("gpu_hours_spot", "GPU-h spot", "{:.2f}"),
]


def _cell(template: str, value) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return template.format(value)


def markdown_table(rows: list[dict]) -> str:
    header = "| " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(_cell(fmt, row[key]) for key, _, fmt in COLUMNS) + " |" for row in rows]
    return "\n".join([header, rule, *body]) + "\n"


def plot(rows: list[dict], timelines: dict, title: str, path: str) -> None:
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

    for row in rows:
        bottom.scatter(row["cost_vs_static_ondemand"], row["ttft_slo_attainment"], s=60)
        bottom.annotate(row["policy"], (row["cost_vs_static_ondemand"], row["ttft_slo_attainment"]), fontsize=8,
                        xytext=(5, 3), textcoords="offset points")
    bottom.axhline(0.99, color="green", linestyle="--", linewidth=1)
    bottom.axvline(0.5, color="green", linestyle="--", linewidth=1)
    bottom.set_xlabel("cost relative to static on-demand peak (target <= 0.5)")
    bottom.set_ylabel("TTFT SLO attainment (target >= 0.99)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
