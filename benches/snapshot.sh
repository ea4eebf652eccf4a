#!/usr/bin/env bash
# What snapshots cost: livechannel with and without a PutLiveChannel Snapshot on every channel, same run,
# same input (1280x720 25 fps H.264, 2 s GOP), same load generator. CPU includes the ffmpeg decoders the
# server runs (their time is reaped into the server's cutime/cstime).
#
#   benches/snapshot.sh            N=1 at Interval 1 and N=200 at Interval 5, each next to no snapshots
#
# Reports CPU ms per stream-second for each run, the snapshots taken/skipped/failed (from /metrics), the
# mean decode+encode time per snapshot, and the CPU cost per snapshot: (CPU with - CPU without) / taken.
# Env: WARMUP, WINDOW, LATENCY (defaults 10, 20, 10), WORKERS ([snapshots] workers; default: the
# server's, one per CPU), OUT.
# Needs: ffmpeg, curl, python3. About four minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
WARMUP=${WARMUP:-10}; WINDOW=${WINDOW:-20}; LATENCY=${LATENCY:-10}; WORKERS=${WORKERS:-}
OUT=${OUT:-target/snapshot}
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
# shellcheck source=benches/common.sh
source benches/common.sh
cargo build --release --quiet --bin livechannel --bin livechannel-bench
input="$OUT/input720.flv"
make_input "$input"

# A receiver for the NotifyTopic messages (answers 200, keeps nothing).
RECV=$(free_port)
python3 - "$RECV" <<'PY' &
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0)); self.send_response(200); self.end_headers()
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
wait_port "$RECV"

run() {  # label N interval(0 = no snapshots)
  local label=$1 n=$2 interval=$3 dir="$work/$1"
  rm -rf "$dir"; mkdir -p "$dir"
  local rtmp http; rtmp=$(free_port); http=$(free_port)
  cat > "$dir/config.toml" <<TOML
rtmp_listen = "127.0.0.1:$rtmp"
http_listen = "127.0.0.1:$http"
data_dir = "$dir/data"
[channel_defaults]
frag_duration = 2
frag_count = 3
[limits]
max_rtmp_connections = 10000
[notify]
allowed_destinations = ["127.0.0.0/8"]
[snapshots]
${WORKERS:+workers = $WORKERS}
[[buckets]]
name = "live"
acl = "public-read-write"
auto_create_channels = true
[[buckets]]
name = "snaps"
acl = "private"
[[notify_topics]]
name = "snapshotnotify"
url = "http://127.0.0.1:$RECV/snapshots"
TOML
  LIVECHANNEL_LOG=warn target/release/livechannel serve --config "$dir/config.toml" > "$dir/log" 2>&1 &
  local pid=$!
  wait_port "$rtmp"
  if [ "$interval" -gt 0 ]; then
    for i in $(seq 0 $((n - 1))); do
      curl -sf -X PUT --data-binary @- "http://127.0.0.1:$http/live/bench$i?live" > /dev/null <<XML
<LiveChannelConfiguration><Status>enabled</Status><Target><Type>HLS</Type><FragDuration>2</FragDuration><FragCount>3</FragCount></Target><Snapshot><RoleName>r</RoleName><DestBucket>snaps</DestBucket><NotifyTopic>snapshotnotify</NotifyTopic><Interval>$interval</Interval></Snapshot></LiveChannelConfiguration>
XML
    done
  fi
  ulimit -n 20000 || true
  target/release/livechannel-bench --rtmp "127.0.0.1:$rtmp" --file "$input" --streams "$n" --ramp 2 \
    --warmup "$WARMUP" --window "$WINDOW" --latency-window "$LATENCY" \
    --hls "http://127.0.0.1:$http/live/{name}/playlist.m3u8" --pids "$pid" \
    --label "$label" --json "$OUT/$label.json" | sed 's/^/  /'
  curl -sf "http://127.0.0.1:$http/metrics" > "$OUT/$label.metrics"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

run none-1 1 0
run snap-1-i1 1 1
run none-200 200 0
run snap-200-i5 200 5

python3 - "$OUT" "$WINDOW" <<'PY'
import json, os, re, sys
out, window = sys.argv[1], float(sys.argv[2])
def load(label):
    r = json.load(open(os.path.join(out, label + ".json")))
    m = open(os.path.join(out, label + ".metrics")).read()
    count = lambda res: float((re.search(r'livechannel_snapshots_total\{result="%s"\} (\S+)' % res, m) or [0, 0])[1])
    s = float((re.search(r"livechannel_snapshot_seconds_sum (\S+)", m) or [0, 0])[1])
    c = float((re.search(r"livechannel_snapshot_seconds_count (\S+)", m) or [0, 0])[1])
    return r, {k: count(k) for k in ("taken", "skipped", "failed")}, (s / c * 1000 if c else None)
print("| run | streams | CPU ms/stream-s | RSS KiB/stream | p99 latency ms | taken | skipped | failed | decode+encode ms |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
rows = {}
for label in ("none-1", "snap-1-i1", "none-200", "snap-200-i5"):
    r, snaps, per = load(label)
    rows[label] = (r, snaps)
    fmt = lambda v, d=2: "-" if v is None else f"{v:.{d}f}"
    print(f"| {label} | {r['streams']} | {fmt(r['cpu_ms_per_stream_second'])} | {fmt(r['rss_kib_per_stream'], 0)} | "
          f"{fmt(r['latency_p99_ms'], 1)} | {snaps['taken']:.0f} | {snaps['skipped']:.0f} | {snaps['failed']:.0f} | {fmt(per, 1)} |")
import math
GOP = 2.0  # the input's keyframe interval (make_input)
for base, with_, interval in (("none-1", "snap-1-i1", 1), ("none-200", "snap-200-i5", 5)):
    (a, _), (b, snaps) = rows[base], rows[with_]
    # Keyframes due per stream-second under the Schedule rule (at least 0.9 x Interval apart), and the
    # share of them the pool took rather than skipped.
    due = 1 / (GOP * math.ceil(0.9 * interval / GOP))
    offered = sum(snaps.values())
    taken = due * (snaps["taken"] / offered if offered else 0)
    extra = b["cpu_ms_per_stream_second"] - a["cpu_ms_per_stream_second"]
    per = f"{extra / taken:.1f} ms CPU per snapshot taken" if taken else "no snapshot taken"
    print(f"{with_}: CPU per stream-second {b['cpu_ms_per_stream_second']:.2f} vs {a['cpu_ms_per_stream_second']:.2f} "
          f"({b['cpu_ms_per_stream_second'] / a['cpu_ms_per_stream_second']:.2f}x); {taken:.3f} snapshots taken per "
          f"stream-second -> {per}")
PY
