#!/usr/bin/env python3
"""The search-quality protocol's table (a sweep of sweeps/search-quality.yaml): one row per spec with held-out accuracy
(mean and per seed), accuracy on the real word crops, onnxruntime time relative to the skeleton (A/B), params;
then each search method against the random mean, in points and in Yang et al.'s relative improvement
(RI = 100 x (acc_method - acc_random) / acc_random), and the supernets' rank correlations.

    python3 scripts/search_quality_table.py ROOT SKELETON_NAME [SEEDS] [ARM]
        ROOT: the sweep's root; SEEDS e.g. 1 or 1,2 (only those seeds' runs, so every model counts alike; "all" for
        every seed); ARM: runs (retrained from scratch, the default) or tuned (inherited from the one-shot
        supernet, then fine-tuned).

The seed spread of each arm (the largest difference between two seeds of one spec, and Kendall's tau of seed 1
against seed 2 over the specs) says how large a difference the arm can resolve.
"""
import glob
import json
import os
import re
import statistics
import sys


def load(path):
    with open(path) as f:
        return json.load(f)


def kendall_tau_b(x, y):
    """Kendall's tau-b (ties in either list reduce the denominator), as `strnas rank` computes it."""
    conc = disc = tx = ty = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tx += 1
            elif dy == 0:
                ty += 1
            elif (dx > 0) == (dy > 0):
                conc += 1
            else:
                disc += 1
    denom = ((conc + disc + tx) * (conc + disc + ty)) ** 0.5
    return (conc - disc) / denom if denom else float("nan")


def main(out, skeleton, only=None, arm="runs"):
    runs = {}
    for path in sorted(glob.glob(os.path.join(out, arm, "*-seed*", "eval.json"))):
        m = re.match(r"(.*)-seed(\d+)$", os.path.basename(os.path.dirname(path)))
        name, seed = m.group(1), int(m.group(2))
        if only and seed not in only:
            continue
        e = load(path)
        sets = {d["name"]: d["accuracy"] for d in e["datasets"]}
        runs.setdefault(name, {})[seed] = sets
    bench = load(os.path.join(out, "bench.json")) if os.path.exists(os.path.join(out, "bench.json")) else None
    ratio, params = {}, {}
    if bench:
        for m in bench["models"]:
            params[m["name"]] = m["params"]
        for r in bench["results"]:
            if r["runtime"] == "ort" and r["batch"] == 1:
                ratio[r["model"]] = (r["relative"]["ab"]["ratio"], r["relative"]["ab"]["noise"]) if r.get("relative") else (1.0, 0.0)

    def kind(name):
        if name == skeleton:
            return "skeleton"
        if name.endswith("-proxyless"):
            return "proxyless"
        if name.endswith("-evolution"):
            return "evolution"
        return "random" if "-rand-" in name else "other"

    order = {"skeleton": 0, "proxyless": 1, "evolution": 2, "random": 3, "other": 4}
    names = sorted(runs, key=lambda n: (order[kind(n)], n))
    real = sorted({s for r in runs.values() for sets in r.values() for s in sets if s != "heldout"})
    head = ["model", "kind", "held-out % mean", "seeds"] + [f"{s} %" for s in real] + ["ort x skeleton", "params"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    mean = {}
    for n in names:
        seeds = runs[n]
        held = [seeds[s]["heldout"] for s in sorted(seeds) if "heldout" in seeds[s]]
        mean[n] = statistics.mean(held) if held else float("nan")
        cells = [n, kind(n), f"{mean[n]:.2f}", " / ".join(f"{h:.2f}" for h in held)]
        for s in real:
            vals = [seeds[k][s] for k in seeds if s in seeds[k]]
            cells.append(f"{statistics.mean(vals):.2f}" if vals else "-")
        r = ratio.get(n)
        cells.append(f"{r[0]:.3f} ±{100 * r[1]:.1f}%" if r else "-")
        cells.append(str(params.get(n, "-")))
        print("| " + " | ".join(cells) + " |")

    rand = [mean[n] for n in names if kind(n) == "random"]
    print()
    noise = {}
    both = [n for n in names if 1 in runs[n] and 2 in runs[n] and "heldout" in runs[n][1] and "heldout" in runs[n][2]]
    if len(both) >= 2:
        spread = max(abs(runs[n][1]["heldout"] - runs[n][2]["heldout"]) for n in both)
        tau = kendall_tau_b([runs[n][1]["heldout"] for n in both], [runs[n][2]["heldout"] for n in both])
        # One run's noise from the seed pairs (each difference has variance 2 sd^2); a difference between two
        # two-seed means then has standard error sd (sqrt(2 x sd^2 / 2)).
        sd = (sum((runs[n][1]["heldout"] - runs[n][2]["heldout"]) ** 2 for n in both) / (2 * len(both))) ** 0.5
        noise["se"] = sd
        print(f"Seed spread ({arm}): the same spec moves by up to {spread:.2f} points between seeds 1 and 2; "
              f"Kendall tau of seed 1 against seed 2 over {len(both)} specs {tau:.3f}. One run's noise (from the seed "
              f"pairs): sd {sd:.2f} points, so a difference between two-seed means has a standard error of {sd:.2f} points.")
        print()
    if rand:
        rm = statistics.mean(rand)
        sd = statistics.stdev(rand) if len(rand) > 1 else 0.0
        print(f"Random architectures ({len(rand)}): held-out mean {rm:.2f}% (sd {sd:.2f}, range {min(rand):.2f}-{max(rand):.2f}).")
        print()
        if "se" in noise:
            # The skeleton comparison is one two-seed mean against another.
            print(f"Differences beyond 2 x {noise['se']:.2f} = {2 * noise['se']:.2f} points against the skeleton are resolved by this protocol.")
            print()
        print("| method | held-out % | vs random mean (points) | RI % | vs skeleton (points) | ort x skeleton |")
        print("|---|---|---|---|---|---|")
        sk = mean.get(skeleton, float("nan"))
        for n in names:
            if kind(n) in ("skeleton", "proxyless", "evolution"):
                ri = 100 * (mean[n] - rm) / rm if rm else float("nan")
                r = ratio.get(n)
                print(f"| {kind(n)} | {mean[n]:.2f} | {mean[n] - rm:+.2f} | {ri:+.1f} | {mean[n] - sk:+.2f} | {r[0]:.3f} |" if r else
                      f"| {kind(n)} | {mean[n]:.2f} | {mean[n] - rm:+.2f} | {ri:+.1f} | {mean[n] - sk:+.2f} | - |")
    print()
    inherit = os.path.join(out, "inherit-evolution.json")
    if arm == "tuned" and os.path.exists(inherit):
        start = {r["model"]: r["inherited_accuracy"] for r in load(inherit)["specs"]}
        common = [n for n in names if n in start]
        if len(common) >= 2:
            tau = kendall_tau_b([start[n] for n in common], [mean[n] for n in common])
            print(f"- inherited accuracy (validation, the fine-tune's start) against fine-tuned held-out mean: "
                  f"Kendall tau {tau:.3f} over {len(common)} specs")
    if arm == "tuned":
        print("Against the retrained arm's stand-alone accuracy (`strnas rank`, rank-*.json):")
    for k, s in enumerate(("proxyless", "evolution")):
        p = os.path.join(out, f"rank-{s}.json")
        # The sweep's record of the search job (stage "search": index 0 proxyless, 1 evolution).
        record = os.path.join(out, "jobs", "search", f"{k}.json")
        extra = ""
        if os.path.exists(record):
            r = load(record)
            extra = f"; search wall time {(r['finished'] - r['started']) / 60:.1f} min"
        if os.path.exists(p):
            c = load(p).get("correlation")
            if c:
                print(f"- {s} supernet: Kendall tau {c['kendall_tau']:.3f}, Spearman rho {c['spearman_rho']:.3f} over {c['models']} specs{extra}")
            else:
                print(f"- {s} supernet: rank correlation undefined{extra}")
            rep = load(p).get("stand_alone_repeatability")
            if rep and k == 0:
                print(f"- stand-alone repeatability (seed 1 vs seed 2 of the same specs): Kendall tau {rep['kendall_tau']:.3f}, "
                      f"Spearman rho {rep['spearman_rho']:.3f} over {rep['models']} specs: no supernet can be expected to rank better")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4, 5):
        sys.exit(__doc__)
    seeds = sys.argv[3] if len(sys.argv) >= 4 else "all"
    arm = sys.argv[4] if len(sys.argv) == 5 else "runs"
    if arm not in ("runs", "tuned"):
        sys.exit(f"ARM: expected runs or tuned, found {arm!r}\n{__doc__}")
    main(sys.argv[1], sys.argv[2], None if seeds == "all" else {int(x) for x in seeds.split(",")}, arm)
