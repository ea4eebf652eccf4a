#!/usr/bin/env bash
# Overload: RSS before, during and after the object store stalls under N real-time 720p publishers.
#
# One release build on S3 storage (s3s-fs on loopback) with a small node budget
# ([limits] media_memory_bytes = BUDGET_MIB). Phases, sampled every SAMPLE seconds:
#   idle     the server with nothing published (the baseline);
#   steady   N publishers (livechannel-bench, 1280x720 2.7 Mbit/s), the store healthy;
#   stall    the S3 server is stopped (SIGSTOP) for STALL seconds: media waits for storage until the budget
#            is full, then channels over their share lose segments; one new publish (ffmpeg) is tried and
#            must be refused as overloaded;
#   recover  the S3 server continues (SIGCONT);
#   after    the publishers have stopped.
# The verdict: waiting media stayed within the budget (plus the 25 % margin channels within their share
# may use), the late publish was refused, storing resumed, and RSS after is near idle (within the
# larger of 64 MiB and a quarter of the peak growth).
#
#   benches/overload.sh                  N=60 STALL=60 BUDGET_MIB=128 SAMPLE=5
#   SKIP_BUILD=1 ...                     use target/release as it is
#
# Output: $OUT/overload.tsv and the verdict on stdout. Loopback only, bounded in time (about 3 minutes
# plus STALL).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-60}; STALL=${STALL:-60}; BUDGET_MIB=${BUDGET_MIB:-128}; SAMPLE=${SAMPLE:-5}
STEADY=${STEADY:-40}; RECOVER=${RECOVER:-40}; AFTER=${AFTER:-40}
OUT=${OUT:-target/overload}
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'kill -CONT $S3 2>/dev/null || true; kill $(jobs -p) 2>/dev/null || true; cp "$work/log" "$OUT/server.log" 2>/dev/null; cp "$work/bench.txt" "$OUT/bench.txt" 2>/dev/null; rm -rf "$work"' EXIT
# shellcheck source=benches/common.sh
source benches/common.sh
command -v s3s-fs > /dev/null || { echo "needs s3s-fs (cargo install s3s-fs --features binary)"; exit 1; }
INPUT=target/bench-720p.flv
make_input "$INPUT"
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --quiet --bin livechannel --bin livechannel-bench

S3P=$(free_port)
mkdir -p "$work/s3/media"
s3s-fs --host 127.0.0.1 --port "$S3P" --access-key livechannel --secret-key livechannel-secret "$work/s3" \
  > "$work/s3.log" 2>&1 &
S3=$!
wait_port "$S3P"

RTMP=$(free_port); HTTP=$(free_port)
cat > "$work/config.toml" <<CONF
rtmp_listen = "127.0.0.1:$RTMP"
http_listen = "127.0.0.1:$HTTP"
data_dir = "$work/data"
[channel_defaults]
frag_duration = 2
frag_count = 3
[[buckets]]
name = "live"
acl = "public-read-write"
auto_create_channels = true
[storage]
kind = "s3"
endpoint = "http://127.0.0.1:$S3P"
bucket = "media"
region = "us-east-1"
access_key_id = "livechannel"
secret_access_key = "livechannel-secret"
path_style = true
[limits]
max_rtmp_connections = 10000
media_memory_bytes = $(( BUDGET_MIB << 20 ))
# A publish whose segments all fail for storage_failure_timeout_ms is ended (the failing-storage rule);
# here the publishers must outlive the stall, so that shedding, not that rule, is what is measured.
storage_failure_timeout_ms = $(( (STALL + 60) * 1000 ))
CONF
env ${SERVER_ENV:-} LIVECHANNEL_LOG=warn target/release/livechannel serve --config "$work/config.toml" > /dev/null 2> "$work/log" &
PID=$!
wait_port "$HTTP"

metric() { curl -sf "http://127.0.0.1:$HTTP/metrics" | awk -v m="$1" '$1 == m { print $2; exit }'; }
printf 'seconds\tphase\trss_kib\tmedia_bytes_waiting\tlive_publishes\tstored\tdropped\tfailed\trefused_overloaded\n' \
  > "$OUT/overload.tsv"
started=$(date +%s)
sample() {
  kill -0 "$PID" || { echo "the server died: see $work/log"; tail -n 20 "$work/log"; exit 1; }
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(( $(date +%s) - started ))" "$1" \
    "$(awk '/^VmRSS/ { print $2 }' /proc/$PID/status)" "$(metric livechannel_media_bytes_waiting)" \
    "$(metric livechannel_live_publishes)" "$(metric 'livechannel_segments_total{outcome="stored"}')" \
    "$(metric 'livechannel_segments_total{outcome="dropped"}')" "$(metric 'livechannel_segments_total{outcome="failed"}')" \
    "$(metric 'livechannel_rtmp_refused_total{reason="overloaded"}')" | tee -a "$OUT/overload.tsv"
}
phase() {  # name seconds
  local until=$(( $(date +%s) + $2 ))
  while [ "$(date +%s)" -lt "$until" ]; do sleep "$SAMPLE"; sample "$1"; done
}

phase idle 15
ulimit -n 20000 || true
window=$(( STEADY + STALL + RECOVER ))
target/release/livechannel-bench --rtmp "127.0.0.1:$RTMP" --file "$INPUT" --streams "$N" --ramp 5 --warmup 0 \
  --window "$window" --latency-window 1 --pids "$PID" --label overload > "$work/bench.txt" 2>&1 &
BENCH=$!
phase steady "$STEADY"
kill -STOP "$S3"
# The budget fills within seconds at N x 2.7 Mbit/s; then a new publish is tried.
phase stall $(( STALL / 2 ))
late=refused
timeout 15 ffmpeg -hide_banner -loglevel error -re -i "$INPUT" -t 10 -c copy -f flv \
  "rtmp://127.0.0.1:$RTMP/live/late-publisher" > "$work/late.txt" 2>&1 && late=accepted
phase stall $(( STALL - STALL / 2 ))
kill -CONT "$S3"
phase recover "$RECOVER"
wait "$BENCH" || true
phase after "$AFTER"
echo "late publish during the stall: $late ($(tr '\n' ' ' < "$work/late.txt" | cut -c1-200))"
grep -m3 -i "overloaded\|shed" "$work/log" | cut -c1-240 || true

python3 - "$OUT/overload.tsv" "$BUDGET_MIB" "$late" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
budget, late = int(sys.argv[2]) << 20, sys.argv[3]
num = lambda r, k: float(r[k] or 0)
by = lambda p: [r for r in rows if r["phase"] == p]
mib = lambda kib: kib / 1024
idle = min(num(r, "rss_kib") for r in by("idle"))
peak = max(num(r, "rss_kib") for r in rows)
after = num(by("after")[-1], "rss_kib")
for p in ["idle", "steady", "stall", "recover", "after"]:
    rs = by(p)
    print(f"{p:8} RSS {mib(min(num(r, 'rss_kib') for r in rs)):7.1f}..{mib(max(num(r, 'rss_kib') for r in rs)):7.1f} MiB"
          f"  waiting max {max(num(r, 'media_bytes_waiting') for r in rs) / 2**20:6.1f} MiB"
          f"  stored {num(rs[-1], 'stored'):6.0f}  dropped {num(rs[-1], 'dropped'):5.0f}  failed {num(rs[-1], 'failed'):5.0f}")
waiting = max(num(r, "media_bytes_waiting") for r in rows)
stall_end = num(by("stall")[-1], "stored")
checks = [
    ("waiting media within the budget + 25 %", waiting <= budget * 1.25, f"{waiting / 2**20:.1f} MiB of {budget >> 20} MiB"),
    ("the late publish refused", late == "refused", late),
    ("storing resumed", num(by("recover")[-1], "stored") > stall_end, f"{stall_end:.0f} -> {num(by('recover')[-1], 'stored'):.0f}"),
    ("RSS after near idle", after - idle <= max(64 * 1024, (peak - idle) / 4),
     f"idle {mib(idle):.1f}, peak {mib(peak):.1f}, after {mib(after):.1f} MiB"),
]
for name, ok, detail in checks:
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
print("verdict:", "ok" if all(ok for _, ok, _ in checks) else "not ok")
PY
