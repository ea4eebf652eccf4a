#!/usr/bin/env bash
# Soak: N real-time publishers (livechannel-bench) for DURATION seconds against one release build, with
# every publish's callbacks (Huawei stream notification and recording callback) delivered to a receiver
# on loopback. Every SAMPLE seconds it records the server's RSS, open fds, threads, outbox depth (callbacks
# not yet delivered) and media bytes waiting for storage; at the end it says whether each stayed flat.
# Segments older than 5 minutes are deleted as it goes (an operator's retention job), so an hour of
# 100 streams does not fill the disk. Loopback only; bounded by DURATION.
#
#   benches/soak.sh                      N=100, DURATION=3600, SAMPLE=60
#   N=20 DURATION=300 SAMPLE=10 benches/soak.sh
#   SKIP_BUILD=1 ...                     use target/release as it is
#
# Output: $OUT/soak.tsv (one line per sample) and the verdict on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-100}; DURATION=${DURATION:-3600}; SAMPLE=${SAMPLE:-60}
OUT=${OUT:-target/soak}
INPUT=${INPUT:-fixtures/media/av_bframes.flv}
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
# shellcheck source=benches/common.sh
source benches/common.sh
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --quiet --bin livechannel --bin livechannel-bench

# The callback receiver: answers 200 to everything, counts what it got.
HOOK=$(free_port)
python3 - "$HOOK" "$work/hook.count" <<'PY' &
import http.server, sys
port, count_file = int(sys.argv[1]), sys.argv[2]
seen = 0
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        global seen
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
        seen += 1
        if seen % 100 == 0:
            open(count_file, "w").write(str(seen))
    do_GET = do_POST
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
PY
wait_port "$HOOK"

RTMP=$(free_port); HTTP=$(free_port)
cat > "$work/config.toml" <<CONF
rtmp_listen = "127.0.0.1:$RTMP"
http_listen = "127.0.0.1:$HTTP"
data_dir = "$work/data"
[channel_defaults]
frag_duration = 2
frag_count = 3
[[auth_tokens]]
token = "soak-token-0123456789"
project_id = "0123456789abcdef0123456789abcdef"
[[buckets]]
name = "live"
acl = "public-read-write"
auto_create_channels = true
[limits]
max_rtmp_connections = 10000
[notify]
allowed_destinations = ["127.0.0.0/8"]
concurrency_per_destination = 16   # the default since the first soak; explicit for older builds
CONF
LIVECHANNEL_LOG=warn target/release/livechannel serve --config "$work/config.toml" > /dev/null 2> "$work/log" &
PID=$!
wait_port "$HTTP"
api="http://127.0.0.1:$HTTP/v1/0123456789abcdef0123456789abcdef"
auth=(-H "X-Auth-Token: soak-token-0123456789" -H "Content-Type: application/json")
curl -sf -X PUT "${auth[@]}" "$api/notifications/publish?domain=live" \
  -d "{\"url\": \"http://127.0.0.1:$HOOK/hw\", \"auth_sign_key\": \"0123456789abcdef0123456789abcdef\"}" > /dev/null
curl -sf -X POST "${auth[@]}" "$api/record/callbacks" \
  -d "{\"publish_domain\": \"live\", \"app\": \"live\", \"notify_callback_url\": \"http://127.0.0.1:$HOOK/rec\",
       \"notify_event_subscription\": [\"RECORD_NEW_FILE_START\", \"RECORD_FILE_COMPLETE\"]}" > /dev/null

ulimit -n 20000 || true
target/release/livechannel-bench --rtmp "127.0.0.1:$RTMP" --file "$INPUT" --streams "$N" --ramp 5 --warmup 0 \
  --window "$DURATION" --latency-window 5 --hls "http://127.0.0.1:$HTTP/live/{name}/playlist.m3u8" \
  --pids "$PID" --label soak --json "$OUT/soak.json" > "$OUT/bench.txt" 2>&1 &
BENCH=$!

metric() { curl -sf "http://127.0.0.1:$HTTP/metrics" | awk -v m="$1" '$1 == m { print $2; exit }'; }
printf 'seconds\trss_kib\tfds\tthreads\toutbox_pending\tmedia_bytes_waiting\tsegments_stored\tcallbacks_received\n' > "$OUT/soak.tsv"
started=$(date +%s)
while kill -0 "$BENCH" 2>/dev/null; do
  sleep "$SAMPLE"
  kill -0 "$PID" || { echo "the server died: see $work/log"; tail -n 20 "$work/log"; exit 1; }
  find "$work/data/media" -name '*.ts' -mmin +5 -delete 2>/dev/null || true
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(( $(date +%s) - started ))" \
    "$(awk '/^VmRSS/ { print $2 }' /proc/$PID/status)" "$(ls /proc/$PID/fd | wc -l)" \
    "$(awk '/^Threads/ { print $2 }' /proc/$PID/status)" "$(metric livechannel_outbox_pending)" \
    "$(metric livechannel_media_bytes_waiting)" "$(metric 'livechannel_segments_total{outcome="stored"}')" \
    "$(cat "$work/hook.count" 2>/dev/null || echo 0)" | tee -a "$OUT/soak.tsv"
done
wait "$BENCH" || true
sed 's/^/  /' "$OUT/bench.txt"

python3 benches/soak_verdict.py "$OUT/soak.tsv" "$N"
