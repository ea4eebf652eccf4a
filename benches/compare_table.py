"""Prints the side-by-side table of a compare.sh run and writes it as JSON (compare.json).

    compare_table.py OUT [A B]     the two servers to compare; default: livechannel nginx
"""
import glob, json, os, sys

out = sys.argv[1]
A, B = sys.argv[2:4] if len(sys.argv) >= 4 else ("livechannel", "nginx")
runs = {}
for path in glob.glob(os.path.join(out, "*-*.json")):
    name = os.path.basename(path)[:-5]
    if name == "compare":
        continue
    server, n = name.rsplit("-", 1)
    runs.setdefault(int(n), {})[server] = json.load(open(path))

def ok(r):
    h = r["hls"]
    return h["streams_ok"] == r["streams"] and h["streams_late"] == 0 and r["total_errors"] == 0

def fmt(v, d=2):
    return "-" if v is None else f"{v:.{d}f}"

def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b

rows = []
print(f"{'N':>5} | {'metric':<28} | {A:>16} | {B:>16} | {'ratio':>6}")
print("-" * 76)
for n in sorted(runs):
    lc, ng = runs[n].get(A), runs[n].get(B)
    metrics = [
        ("CPU ms / stream-second", "cpu_ms_per_stream_second", 3),
        ("server CPU %", "server_cpu_percent", 1),
        ("RSS KiB / stream", "rss_kib_per_stream", 0),
        ("latency median ms", "latency_median_ms", 1),
        ("latency p99 ms", "latency_p99_ms", 1),
        ("generator CPU %", "generator_cpu_percent", 1),
        ("S3 writes / segment stored", "s3_requests_per_segment", 2),
    ]
    row = {"n": n}
    for label, key, d in metrics:
        a = lc.get(key) if lc else None
        b = ng.get(key) if ng else None
        if a is None and b is None:
            continue
        row[key] = {A: a, B: b, "ratio": ratio(a, b)}
        print(f"{n:>5} | {label:<28} | {fmt(a, d):>16} | {fmt(b, d):>16} | {fmt(ratio(a, b)):>6}")
    for who, r in ((A, lc), (B, ng)):
        if r:
            row[f"{who}_hls"] = r["hls"] | {"all_correct_and_on_time": ok(r)}
    a = f"{lc['hls']['streams_ok']}/{n}" + ("" if lc and ok(lc) else " !") if lc else "-"
    b = f"{ng['hls']['streams_ok']}/{n}" + ("" if ng and ok(ng) else " !") if ng else "-"
    print(f"{n:>5} | {'HLS streams correct':<28} | {a:>16} | {b:>16} |")
    print("-" * 76)
    rows.append(row)

best = {}
for who in (A, B):
    good = [n for n in runs if who in runs[n] and ok(runs[n][who])]
    best[who] = max(good) if good else None
print(f"highest N with every stream correct and on time: {A} {best[A]}, {B} {best[B]}")
json.dump({"rows": rows, "highest_ok_n": best}, open(os.path.join(out, f"compare-{A}-vs-{B}.json"), "w"), indent=2)
