#!/usr/bin/env python3
"""Which correction model does a latency table's evidence support? Cross-validated on a check's models.

    python3 scripts/latency_kind_models.py CHECK.json [CHECK.json ...]

CHECK.json is `strnas latency check --json` output (every row has its prediction's blocks and its calibrated
and plain-median times). For each grouping of the blocks into kinds (one common scale for every searchable
block; per part; per expansion; per part x expansion; per part x kernel; per part x kernel x expansion) and
each shrinkage towards the common scale, repeated two-fold cross-validation fits
`time ~ sum_k a_k x (table ms of kind k) + b` on half the models and predicts the other half; printed: MAPE and
the share within +-10% and +-5% of held-out predictions, against the calibrated times and the plain medians.
Kinds whose sum does not vary (the fixed blocks of a space) fold into the offset. Pure Python, no numpy.
"""
import json
import random
import sys


def kind(path, key, mode):
    part = path.split(".")[0]
    cls = key.split("-input:")[0]
    if not (".cells." in path or path.endswith(".first")):
        return "fixed"
    op, _, exp = cls.partition("-")
    if not op.startswith("mb"):
        return "identity"
    return {"common": "searchable", "part": part, "expansion": exp, "part x expansion": f"{part}/{exp}",
            "part x kernel": f"{part}/{op}", "part x kernel x expansion": f"{part}/{cls}"}[mode]


def solve(a, b):
    m = len(a)
    a = [row[:] + [v] for row, v in zip(a, b)]
    for c in range(m):
        p = max(range(c, m), key=lambda i: abs(a[i][c]))
        if abs(a[p][c]) < 1e-300:
            return None
        a[c], a[p] = a[p], a[c]
        for r in range(m):
            if r != c:
                f = a[r][c] / a[c][c]
                a[r] = [x - f * y for x, y in zip(a[r], a[c])]
    return [a[i][m] / a[i][i] for i in range(m)]


def fit(xs, ys, ridge):
    """Scales per column (0 for columns without spread: they fold into the offset) and offset, shrunk towards the
    common scale."""
    n, k = len(xs), len(xs[0])
    mx = [sum(x[j] for x in xs) / n for j in range(k)]
    my = sum(ys) / n
    spread = [sum((x[j] - mx[j]) ** 2 for x in xs) for j in range(k)]
    free = [j for j in range(k) if (spread[j] / n) ** 0.5 > 0.005 * abs(my)]
    # Common scale first (all searchable columns together), then deviations per kind around it.
    tot = [sum(x[j] for j in free) for x in xs]
    mt = sum(tot) / n
    stt = sum((t - mt) ** 2 for t in tot)
    common = sum((t - mt) * (y - my) for t, y in zip(tot, ys)) / stt if stt > 0 else 1.0
    resid = [y - common * t for y, t in zip(ys, tot)]
    mr = sum(resid) / n
    g = [[sum((x[i] - mx[i]) * (x[j] - mx[j]) for x in xs) + (ridge * spread[i] if i == j else 0.0) for j in free] for i in free]
    rhs = [sum((x[i] - mx[i]) * (r - mr) for x, r in zip(xs, resid)) for i in free]
    d = solve(g, rhs) or [0.0] * len(free)
    a = [0.0] * k
    for idx, j in enumerate(free):
        a[j] = common + d[idx]
    b = my - sum(a[j] * mx[j] for j in range(k))
    return a, b


def stats(pairs):
    errs = [100 * (p - m) / m for p, m in pairs]
    n = len(errs)
    return (sum(abs(e) for e in errs) / n, 100 * sum(abs(e) <= 10 for e in errs) / n, 100 * sum(abs(e) <= 5 for e in errs) / n)


def main(paths):
    for path in paths:
        rows = json.load(open(path))["rows"]
        if len(rows) < 4:
            sys.exit(f"{path}: {len(rows)} models; cross-validation needs at least 4")
        print(f"{path}: {len(rows)} models")
        print(f"{'kinds':28s} {'n':>3s} {'shrink':>6s} | {'vs calibrated: MAPE  +-10%  +-5%':34s} | vs plain medians: MAPE  +-10%  +-5%")
        table_cal = stats([(r["predicted_ms"], r["measured_ms"]) for r in rows])
        table_raw = stats([(r["predicted_ms"], r["raw"]["median_ms"]) for r in rows])
        print(f"{'the table as built':28s} {'':>3s} {'':>6s} | {table_cal[0]:21.2f} {table_cal[1]:5.1f} {table_cal[2]:5.1f} | {table_raw[0]:22.2f} {table_raw[1]:5.1f} {table_raw[2]:5.1f}")
        for mode in ["common", "part", "expansion", "part x expansion", "part x kernel", "part x kernel x expansion"]:
            kinds = sorted({kind(p, k, mode) for r in rows for p, k, _ in r["blocks"]})
            xs = [[sum(ms for p, k, ms in r["blocks"] if kind(p, k, mode) == kk) for kk in kinds] for r in rows]
            for ridge in [0.0, 1.0]:
                out = []
                for ref in ("measured_ms", "raw"):
                    ys = [r[ref] if ref == "measured_ms" else r["raw"]["median_ms"] for r in rows]
                    rng = random.Random(0)
                    pairs = []
                    for _ in range(20):
                        idx = list(range(len(rows)))
                        rng.shuffle(idx)
                        h = len(idx) // 2
                        for tr, te in ((idx[:h], idx[h:]), (idx[h:], idx[:h])):
                            a, b = fit([xs[i] for i in tr], [ys[i] for i in tr], ridge)
                            pairs += [(sum(aj * xj for aj, xj in zip(a, xs[i])) + b, ys[i]) for i in te]
                    out.append(stats(pairs))
                (c, r) = out
                print(f"{mode:28s} {len(kinds):3d} {ridge:6.1f} | {c[0]:21.2f} {c[1]:5.1f} {c[2]:5.1f} | {r[0]:22.2f} {r[1]:5.1f} {r[2]:5.1f}")
        print()


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
