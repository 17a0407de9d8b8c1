#!/usr/bin/env python3
"""The demo's closing summary (scripts/demo.sh): the baseline against the searched model on the demo's test
set and under onnxruntime and tract, where the search landed against its latency target, and whether the
searched model is dominated by the baseline (slower A/B, or more than 2 points less accurate).

    python3 scripts/demo_summary.py runs/demo
"""
import json
import os
import sys


def load(path):
    with open(path) as f:
        return json.load(f)


def search_line(d):
    """Where the search landed against its latency target (the baseline's predicted latency)."""
    evo = os.path.join(d, "search", "evolution.json")
    if os.path.exists(evo):
        o = load(evo)
        sk = o.get("skeleton") or {}
        kept = o["best"]["choice"] == sk.get("choice")
        return (f"Search (evolution): {o['scored']} candidates scored within the {o['limit_ms']:.3f} ms limit; the fittest is "
                f"predicted at {o['best']['latency_ms']:.3f} ms ({100 * (o['best']['latency_ms'] / o['limit_ms'] - 1):+.1f}% of the limit)"
                + ("; no candidate beat the baseline, so the search kept it." if kept else "."))
    pred = os.path.join(d, "latency-predicted.json")
    if not os.path.exists(pred):
        return "Search: no searched spec (search/log.txt)."
    base, found = (p["prediction"] for p in load(pred))
    target, got = base["total_ms"], found["total_ms"]
    steps = 0
    with open(os.path.join(d, "search", "probs.jsonl")) as f:
        for line in f:
            steps = json.loads(line)["arch_step"]
    return (f"Search (ProxylessNAS, {steps} architecture steps): target {target:.3f} ms (the baseline's predicted latency); "
            f"the searched spec is predicted at {got:.3f} ms ({100 * (got / target - 1):+.1f}% of the target).")


def main(d):
    bench = load(os.path.join(d, "bench.json"))
    evals = {"baseline": load(os.path.join(d, "eval.json"))}
    if os.path.exists(os.path.join(d, "eval-searched.json")):
        evals["searched"] = load(os.path.join(d, "eval-searched.json"))
    models = {m["name"]: m for m in bench["models"]}

    def timing(name, runtime):
        for r in bench["results"]:
            if r["model"] == name and r["runtime"] == runtime and r["batch"] == 1:
                return r
        return None

    rows = []
    for role, e in evals.items():
        name = e["model"]
        ort, tract = timing(name, "ort"), timing(name, "tract")
        ratio = ort["relative"]["ab"]["ratio"] if ort and ort.get("relative") else (1.0 if role == "baseline" else None)
        size = os.path.getsize(os.path.join(d, "run" if role == "baseline" else "searched", "model.onnx")) / 1e6
        rows.append((role, name, e["total"]["accuracy"], ort and ort["ms_per_image"], tract and tract["ms_per_image"], ratio, models.get(name, {}).get("params"), size))
    print("| model | spec | test acc % | ort ms/img | tract ms/img | ort x baseline (A/B) | params | ONNX MB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    f = lambda v, p: "-" if v is None else f"{v:.{p}f}"
    for role, name, acc, o, t, r, params, size in rows:
        print(f"| {role} | {name} | {acc:.1f} | {f(o, 3)} | {f(t, 3)} | {f(r, 3)} | {params if params is not None else '-'} | {size:.2f} |")
    print("(onnxruntime and tract at batch 1, one thread; the A/B ratio alternates the two models in one process)")

    print()
    print(search_line(d))

    if len(rows) == 2:
        (_, _, a0, *_), (_, _, a1, _, _, r1, _, _) = rows
        faster = r1 is not None and r1 <= 1.0
        close = a1 >= a0 - 2.0
        verdict = "not dominated by the baseline" if faster and close else "DOMINATED by the baseline"
        print(f"Searched model: {verdict} (time {f(r1, 3)}x the baseline's, goal <= 1.0x; accuracy {a1 - a0:+.1f} points, goal >= -2).")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
