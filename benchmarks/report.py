"""Result files -> the markdown table in benchmarks/results/gpu-bench.md, with the ratios the issue targets."""

import json
import os

TARGETS = {"qwen_tokens_per_s": 18000, "qwen_vs_generate_batch": 5.0, "llama_b1_bw": 0.80, "llama_b256_bw": 0.70}


def merge(files: list[str]) -> dict:
    merged: dict = {"runs": []}
    for path in files:
        with open(path) as f:
            run = json.load(f)
        merged["runs"].append({"file": os.path.basename(path), **run["environment"]})
        for shape, entry in run.get("offline", {}).items():
            ours, hf = entry.get("fleetserve", {}), entry.get("hf_generate_batch", {})
            if "output_tokens_per_s" in ours:
                merged.setdefault("offline_runs", []).append({
                    "file": os.path.basename(path), "commit": run["environment"].get("commit"), "shape": shape,
                    "fleetserve": ours["output_tokens_per_s"], "hf_generate_batch": hf.get("output_tokens_per_s")})
        for key, value in run.items():
            if key in ("environment", "sections", "shapes", "settings"):
                continue
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                _deep_update(merged[key], value)
            else:
                merged[key] = value
    return merged


def _deep_update(into: dict, new: dict) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict) and "error" not in into[k]:  # a rerun replaces a failure
            _deep_update(into[k], v)
        else:
            into[k] = v


def _fmt(x, spec=",.0f") -> str:
    return format(x, spec) if isinstance(x, (int, float)) else "—"


def summary(results: dict) -> str:
    lines = []
    runs = results.get("runs") or [results.get("environment", {})]
    for env in runs:
        lines.append(f"- {env.get('gpu')} · torch {env.get('torch')} · triton {env.get('triton')} · transformers "
                     f"{env.get('transformers')} · commit {str(env.get('commit'))[:10]} · {env.get('date')}")
    ceil = results.get("ceilings", {})
    if ceil:
        lines.append(f"- measured ceilings: copy {_fmt(ceil['copy_gbps'])} GB/s (read + write), bf16 matmul "
                     f"{_fmt(ceil['matmul_bf16_tflops'])} TFLOP/s")
    offline = results.get("offline", {})
    if offline:
        lines += ["", "| offline, 256 requests, in/out U[100, 1024] | output tok/s | timed | seconds |",
                  "|---|---:|---|---:|"]
        for shape, entry in offline.items():
            for system in ("fleetserve", "hf_generate_batch", "hf_static_generate"):
                r = entry.get(system)
                if r is None:
                    continue
                if "error" in r:
                    lines.append(f"| {shape} · {system} | failed: {r['error'][:60]} | | |")
                    continue
                timed = (f"{r['window_s']:.0f} s window" if "window_s" in r else "all requests to completion")
                if "batch_size" in r:
                    timed += f", first {r['batch_size']} requests as one batch"
                lines.append(f"| {shape} · {system} | {_fmt(r['output_tokens_per_s'])} | {timed} | "
                             f"{_fmt(r['seconds'], '.1f')} |")
    runs = results.get("offline_runs", [])
    if len(runs) > 1:  # the run-to-run (and machine-to-machine) spread of the table's numbers
        lines += ["", "Every offline FleetServe run merged here (the table above shows the last):", "",
                  "| shape | commit | file | FleetServe tok/s | HF generate_batch tok/s (same run) |",
                  "|---|---|---|---:|---:|"]
        lines += [f"| {r['shape']} | {str(r['commit'])[:10]} | {r['file']} | {_fmt(r['fleetserve'])} | "
                  f"{_fmt(r['hf_generate_batch'])} |" for r in runs]
    decode = results.get("decode", {})
    if decode:
        lines += ["", "| decode, 1k context | batch | step ms | tok/s | GB/s moved | of copy BW | GPU-only (graph) |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for shape, rows in decode.items():
            for r in rows:
                if "skipped" in r:
                    lines.append(f"| {shape} | {r['batch']} | skipped: {r['skipped']} | | | | |")
                    continue
                lines.append(f"| {shape} | {r['batch']} | {_fmt(r['step_ms'], '.2f')} | {_fmt(r['tokens_per_s'])} | "
                             f"{_fmt(r['gbps'])} | {r['bandwidth_fraction']:.0%} | "
                             f"{r['graph_bandwidth_fraction']:.0%} |")
    online = results.get("online")
    if online and "ttft_p50_ms" in online:
        o = online
        lines += ["", f"Online: {o['model']}, {o['trace']} arrivals ×{o['rate_scale']} "
                      f"({o['offered_rate']:.1f} req/s offered, {o['completed']}/{o['requests']} completed, "
                      f"{o['errors']} errors)", "",
                  "| TTFT p50 | TTFT p99 | ITL p50 | ITL p99 | TPOT p50 | TPOT p99 | goodput | SLO attainment |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|",
                  f"| {o['ttft_p50_ms']:.0f} ms | {o['ttft_p99_ms']:.0f} ms | {o['itl_p50_ms']:.1f} ms | "
                  f"{o['itl_p99_ms']:.1f} ms | {o['tpot_p50_ms']:.1f} ms | {o['tpot_p99_ms']:.1f} ms | "
                  f"{o['goodput_rps']:.2f} req/s | {o['slo_attainment']:.0%} |",
                  f"SLO: TTFT ≤ {o['slo']['ttft_s'] * 1e3:.0f} ms and time per output token ≤ "
                  f"{o['slo']['tpot_s'] * 1e3:.0f} ms."]
    corr = results.get("correctness", {})
    if corr:
        lines += ["", "| correctness vs HF | logits rel. err prefill / decode (HF bf16's own) | greedy agreement before divergence "
                      "| batching + preemption |", "|---|---|---|---|"]
        for model, e in corr.items():
            if "error" in e:
                lines.append(f"| {model} | failed: {e['error'][:80]} | | |")
                continue
            lg, gr, bp = e.get("logits", {}), e.get("greedy", {}), e.get("batching_preemption")
            logit_txt = (f"{lg.get('ours_prefill_err', 0):.4f} / {lg.get('ours_decode_err', 0):.4f} "
                         f"({lg.get('hf_bf16_prefill_err', 0):.4f} / {lg.get('hf_bf16_decode_err', 0):.4f}) "
                         f"{'pass' if lg.get('passed') else 'FAIL'}")
            greedy_txt = (f"vs {gr.get('reference', 'HF transformers, bf16')}: {_agreement(gr)}"
                          + (f"; vs HF bf16 {gr['agreement_with_hf_bf16']:.1%} strict (HF bf16 vs HF fp32: "
                             f"{gr['hf_bf16_agreement_with_hf_fp32']:.1%})" if "agreement_with_hf_bf16" in gr else ""))
            batch_txt = f"{_agreement(bp)}, {bp['preemptions']} preemptions" if bp else "—"
            lines.append(f"| {model} | {logit_txt} | {greedy_txt} | {batch_txt} |")
        for model, e in corr.items():
            lines += _probes(model, e.get("greedy", {}).get("probes", []))
    lines += ["", *targets(results)]
    if results.get("failures"):
        lines += ["", f"Failed sections: {results['failures']}"]
    return "\n".join(lines)


def _probes(model: str, probes: list[dict]) -> list[str]:
    """Where a divergence that is no near-tie comes from (`correctness.probe_divergences`)."""
    lines = []
    for p in probes:
        lines += ["", f"{model}, prompt {p['prompt']}, token {p['position']}: float32 margin {p['margin']:.4f} "
                      f"(tolerance {p['tolerance']:.4f}) for token {p['reference_token']} over our "
                      f"{p['our_token']}. HF's own bf16 model there: relative logit error "
                      f"{p['hf_bf16_relative_error_here']:.4f}, margin {p['hf_bf16_margin']:+.4f}. "
                      "Our margin there (> 0 picks the reference's): "
                  + ", ".join(f"{k} {v:+.4f}" for k, v in p["our_margins"].items()) + ".",
                  "", "| greedy run | token there | agrees for |", "|---|---:|---:|"]
        lines += [f"| {name} | {r['token_there']} | {r['agrees_for']} |" for name, r in p["greedy_runs"].items()]
    return lines


def _agreement(r: dict) -> str:
    tie_aware = r.get("tie_aware_agreement")
    txt = f"{r.get('agreement_before_divergence', 0):.1%} strict"
    if tie_aware is not None:
        txt += (f", {tie_aware:.1%} tie-aware ({r.get('near_tie_divergences')} near-tie, "
                f"{r.get('other_divergences')} other divergences)")
    return f"{txt} {'pass' if r.get('passed') else 'FAIL'}"


def targets(results: dict) -> list[str]:
    """The issue's targets, where each stands."""
    out = ["| target (issue 3) | wanted | measured | met |", "|---|---:|---:|---|"]
    qwen = results.get("offline", {}).get("qwen3-0.6b", {})
    ours = qwen.get("fleetserve", {}).get("output_tokens_per_s")
    hf = qwen.get("hf_generate_batch", {}).get("output_tokens_per_s")
    out.append(f"| Qwen3-0.6B offline output tok/s | ≥ {TARGETS['qwen_tokens_per_s']:,} | {_fmt(ours)} | "
               f"{_met(ours, TARGETS['qwen_tokens_per_s'])} |")
    ratio = ours / hf if ours and hf else None
    out.append(f"| Qwen3-0.6B vs HF generate_batch | ≥ {TARGETS['qwen_vs_generate_batch']:.0f}× | "
               f"{_fmt(ratio, '.1f')}× | {_met(ratio, TARGETS['qwen_vs_generate_batch'])} |")
    rows = {r["batch"]: r for r in results.get("decode", {}).get("llama-3-8b", []) if "skipped" not in r}
    for batch, key in ((1, "llama_b1_bw"), (256, "llama_b256_bw")):
        frac = rows.get(batch, {}).get("bandwidth_fraction")
        out.append(f"| Llama-3-8B decode batch {batch}, fraction of copy BW | ≥ {TARGETS[key]:.0%} | "
                   f"{format(frac, '.1%') if frac is not None else '—'} | {_met(frac, TARGETS[key])} |")
    return out


def _met(value, wanted) -> str:
    return "—" if value is None else "yes" if value >= wanted else "**no**"


def write(files: list[str], out_dir: str) -> None:
    merged = merge(files)
    with open(os.path.join(out_dir, "gpu-bench.json"), "w") as f:
        json.dump(merged, f, indent=1)
    with open(os.path.join(out_dir, "gpu-bench.md"), "w") as f:
        f.write("# GPU benchmark results (issue 3)\n\nProduced by `python benchmarks/gpu_bench.py`; raw numbers in "
                "gpu-bench.json and gpu-run-*.json.\n\n" + summary(merged) + "\n")
