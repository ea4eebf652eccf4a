#!/usr/bin/env bash
# Cluster benchmark: N publishers on 1 livechannel node, then the same N spread over 2 nodes (half each,
# as a TCP balancer would), in one run, both on one PostgreSQL and one s3s-fs, on loopback.
#
#   benches/cluster.sh [N]        default 400
#
# Per node: CPU per stream-second and RSS (livechannel-bench, the node's process only), keyframe-to-playlist
# latency; per setup: database transactions per stored segment (pg_stat_database.xact_commit over the run,
# divided by the segments stored). Env: WARMUP, WINDOW, LATENCY (seconds; defaults 10, 20, 15), OUT.
# Needs: ffmpeg (the input), s3s-fs on PATH, Debian's postgresql (run as root), python3.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-400}
WARMUP=${WARMUP:-10}; WINDOW=${WINDOW:-20}; LATENCY=${LATENCY:-15}
OUT=${OUT:-target/cluster}
mkdir -p "$OUT"
work=$(mktemp -d)
PG_DATA=""
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  [ -n "$PG_DATA" ] && runuser -u postgres -- "$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)/pg_ctl" \
    -D "$PG_DATA" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=benches/common.sh
source benches/common.sh

cargo build --release --quiet --bin livechannel --bin livechannel-bench
input="$OUT/input720.flv"
make_input "$input"

S3_ROOT="$work/s3"; mkdir -p "$S3_ROOT/media"
S3_PORT=$(free_port)
s3s-fs --host 127.0.0.1 --port "$S3_PORT" --access-key bench --secret-key bench-secret "$S3_ROOT" > "$work/s3.log" 2>&1 &
wait_port "$S3_PORT"
PG_URL=$(bash .ci/postgres.sh 2>"$work/pgdir"); PG_DATA=$(tail -n1 "$work/pgdir")

start_node() {  # id prefix -> sets RTMP_<id> HTTP_<id> PID_<id>
  local id=$1 prefix=$2 dir="$work/$1"
  mkdir -p "$dir"
  local rtmp http; rtmp=$(free_port); http=$(free_port)
  cat > "$dir/config.toml" <<TOML
rtmp_listen = "127.0.0.1:$rtmp"
http_listen = "127.0.0.1:$http"
data_dir = "$dir/data"
node_id = "$id"
[channel_defaults]
frag_duration = 2
frag_count = 3
[limits]
max_rtmp_connections = 10000
[storage]
kind = "s3"
endpoint = "http://127.0.0.1:$S3_PORT"
bucket = "media"
access_key_id = "bench"
secret_access_key = "bench-secret"
prefix = "$prefix"
[database]
url = "$PG_URL"
max_connections = 8
TOML
  LIVECHANNEL_LOG=warn target/release/livechannel serve --config "$dir/config.toml" > "$dir/log" 2>&1 &
  printf -v "PID_$id" '%s' "$!"
  printf -v "RTMP_$id" '%s' "$rtmp"
  printf -v "HTTP_$id" '%s' "$http"
  wait_port "$rtmp"
}

xacts() { psql "$PG_URL" -Atc "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"; }
segments() { find "$S3_ROOT/media/$1" -name '*.ts' 2>/dev/null | wc -l; }

bench() {  # node streams name label
  local node=$1 n=$2 name=$3 label=$4
  local rtmp="RTMP_$node" http="HTTP_$node" pid="PID_$node"
  target/release/livechannel-bench --rtmp "127.0.0.1:${!rtmp}" --file "$input" --streams "$n" --ramp 2 \
    --prefix "$name" --warmup "$WARMUP" --window "$WINDOW" --latency-window "$LATENCY" \
    --hls "http://127.0.0.1:${!http}/live/{name}/playlist.m3u8" --pids "${!pid}" \
    --label "$label" --json "$OUT/$label.json" | sed "s/^/  [$label] /"
}

setup() {  # name: one node with N, or two nodes with N/2 each
  local name=$1
  sleep 2; local before; before=$(xacts)
  if [ "$name" = one ]; then
    start_node one one
    bench one "$N" s one
  else
    start_node twoa two; start_node twob two
    ulimit -n 20000 || true
    bench twoa $((N / 2)) a twoa &
    local first=$!
    bench twob $((N - N / 2)) b twob
    wait "$first"
  fi
  local p
  for p in ${PID_one:-} ${PID_twoa:-} ${PID_twob:-}; do kill "$p" 2>/dev/null || true; done
  for p in ${PID_one:-} ${PID_twoa:-} ${PID_twob:-}; do wait "$p" 2>/dev/null || true; done
  # pg_stat_database is updated within a second of each commit.
  sleep 2
  local after; after=$(xacts)
  echo "{\"transactions\": $((after - before)), \"segments\": $(segments "$name")}" > "$OUT/$name-db.json"
}

ulimit -n 20000 || true
echo "== 1 node, $N publishers"
setup one
echo "== 2 nodes, $N publishers ($((N / 2)) each)"
setup two

python3 - "$OUT" "$N" <<'PY'
import json, os, sys
out, n = sys.argv[1], int(sys.argv[2])
load = lambda name: json.load(open(os.path.join(out, f"{name}.json")))
rows = [("1 node", "one", ["one"]), ("2 nodes", "two", ["twoa", "twob"])]
result = {"n": n, "setups": {}}
print(f"{'setup':<8} | {'node':<6} | {'streams':>7} | {'CPU ms/stream-s':>15} | {'RSS KiB/stream':>14} | {'lat p50 ms':>10} | {'lat p99 ms':>10} | {'HLS ok':>8}")
print("-" * 98)
for label, setup, nodes in rows:
    db = load(f"{setup}-db")
    entry = {"db_transactions": db["transactions"], "segments_stored": db["segments"],
             "db_transactions_per_segment": db["transactions"] / db["segments"] if db["segments"] else None,
             "nodes": {}}
    for node in nodes:
        r = load(node)
        h = r["hls"]
        entry["nodes"][node] = {k: r.get(k) for k in ("streams", "cpu_ms_per_stream_second", "rss_kib_per_stream",
                                                      "latency_median_ms", "latency_p99_ms", "server_cpu_percent")}
        entry["nodes"][node]["hls_ok"] = f"{h['streams_ok']}/{r['streams']}"
        f = lambda v, d: "-" if v is None else f"{v:.{d}f}"
        print(f"{label:<8} | {node:<6} | {r['streams']:>7} | {f(r.get('cpu_ms_per_stream_second'), 3):>15} | "
              f"{f(r.get('rss_kib_per_stream'), 0):>14} | {f(r.get('latency_median_ms'), 1):>10} | "
              f"{f(r.get('latency_p99_ms'), 1):>10} | {h['streams_ok']}/{r['streams']:>4}")
    tps = entry["db_transactions_per_segment"]
    print(f"{label:<8} | database: {db['transactions']} transactions for {db['segments']} segments = "
          f"{'-' if tps is None else f'{tps:.2f}'} per segment")
    print("-" * 98)
    result["setups"][setup] = entry
json.dump(result, open(os.path.join(out, "cluster.json"), "w"), indent=2)
PY
