"""The verdict of a soak run: did RSS, fds, threads, the outbox and the media waiting for storage stay flat?

    soak_verdict.py SOAK.TSV N     (benches/soak.sh runs it; run it again on a committed TSV)
"""
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
n = int(sys.argv[2])
if len(rows) < 4:
    sys.exit(f"only {len(rows)} samples: run longer than 4 x SAMPLE")
num = lambda r, k: float(r[k] or 0)
# The first quarter is warm-up (buffers and caches reach their working size); compare the second
# quarter with the last.
q = len(rows) // 4
early, late = rows[q:2 * q] or rows[q:q + 1], rows[-q:]
def mean(rs, k): return sum(num(r, k) for r in rs) / len(rs)
def median(rs, k): return sorted(num(r, k) for r in rs)[len(rs) // 2]
checks = [
    ("rss_kib", mean(late, "rss_kib") <= mean(early, "rss_kib") * 1.10 + 2048, "within 10 % + 2 MiB"),
    # The median, not the maximum: segment files and callback connections open in bursts, so one sample
    # can sit well above the rest while the floor stays put; a leak raises the floor.
    ("fds", median(late, "fds") <= median(early, "fds") + 10, "median within 10"),
    ("threads", max(num(r, "threads") for r in late) <= max(num(r, "threads") for r in early) + 4, "within 4"),
    ("outbox_pending", max(num(r, "outbox_pending") for r in late) <= 4 * n, f"at most {4 * n}"),
    ("media_bytes_waiting", max(num(r, "media_bytes_waiting") for r in late) <= n * 1 << 20, "at most 1 MiB a stream"),
]
stored = [num(r, "segments_stored") for r in rows]
checks.append(("segments_stored", all(b > a for a, b in zip(stored, stored[1:])), "rises every sample"))
for name, ok, rule in checks:
    print(f"{name:22} early {mean(early, name):12.0f}  late {mean(late, name):12.0f}  {'flat' if ok else 'NOT FLAT'} ({rule})")
print("verdict:", "flat" if all(ok for _, ok, _ in checks) else "not flat")
