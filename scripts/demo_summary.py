#!/usr/bin/env python3
"""The demo's closing summary (scripts/demo.sh): the baseline, the baseline trained on, and the searched model
(fine-tuned from its inherited weights for what the search left of the same time) on the demo's test set and
under onnxruntime and tract; where the search landed against its latency target; and whether the searched
model is dominated by the baseline trained on (slower A/B, or more than 2 points less accurate).

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
    changed = changed_cells(d)
    cells = "" if changed is None else f"; {changed} cell(s) changed from the baseline"
    return (f"Search (ProxylessNAS, {steps} architecture steps): target {target:.3f} ms (the baseline's predicted latency); "
            f"the searched spec is predicted at {got:.3f} ms ({100 * (got / target - 1):+.1f}% of the target){cells}.")


def changed_cells(d):
    """How many cells the proxyless search changed from the baseline (search/done.json), or None."""
    done = os.path.join(d, "search", "done.json")
    return load(done).get("changed_cells") if os.path.exists(done) else None


# role -> (eval file, run directory holding model.onnx)
ROLES = {
    "baseline": ("eval.json", "run"),
    "baseline trained on": ("eval-trained-on.json", "run"),
    "searched, fine-tuned": ("eval-searched.json", "searched"),
}


def main(d):
    bench = load(os.path.join(d, "bench.json"))
    evals = {role: (load(os.path.join(d, f)), run) for role, (f, run) in ROLES.items() if os.path.exists(os.path.join(d, f))}
    models = {m["name"]: m for m in bench["models"]}

    def timing(name, runtime):
        for r in bench["results"]:
            if r["model"] == name and r["runtime"] == runtime and r["batch"] == 1:
                return r
        return None

    rows = {}
    for role, (e, run) in evals.items():
        name = e["model"]
        ort, tract = timing(name, "ort"), timing(name, "tract")
        ratio = ort["relative"]["ab"]["ratio"] if ort and ort.get("relative") else (1.0 if run == "run" else None)
        size = os.path.getsize(os.path.join(d, run, "model.onnx")) / 1e6
        rows[role] = (name, e["total"]["accuracy"], ort and ort["ms_per_image"], tract and tract["ms_per_image"], ratio, models.get(name, {}).get("params"), size)
    print("| model | spec | test acc % | ort ms/img | tract ms/img | ort x baseline (A/B) | params | ONNX MB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    f = lambda v, p: "-" if v is None else f"{v:.{p}f}"
    for role, (name, acc, o, t, r, params, size) in rows.items():
        print(f"| {role} | {name} | {acc:.1f} | {f(o, 3)} | {f(t, 3)} | {f(r, 3)} | {params if params is not None else '-'} | {size:.2f} |")
    print("(onnxruntime and tract at batch 1, one thread; the A/B ratio alternates the two models in one process;")
    print(" the baseline trained on has the baseline's spec, so its timing is the baseline's)")

    print()
    print(search_line(d))

    ref, new = rows.get("baseline trained on"), rows.get("searched, fine-tuned")
    if ref and new:
        a0, a1, r1 = ref[1], new[1], new[4]
        faster = r1 is not None and r1 <= 1.0
        close = a1 >= a0 - 2.0
        verdict = "not dominated by the baseline trained on" if faster and close else "DOMINATED by the baseline trained on"
        print(f"Searched model: {verdict} for the same time (time {f(r1, 3)}x the baseline's, goal <= 1.0x; "
              f"accuracy {a1 - a0:+.1f} points against it, goal >= -2).")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
