#!/usr/bin/env bash
# Side-by-side benchmark: livechannel vs nginx-rtmp (Debian nginx + libnginx-mod-rtmp, `hls on`, 2 s fragments,
# 3-segment playlist), both on loopback, same load generator (livechannel-bench), same input, same machine.
#
#   benches/compare.sh [N ...]          default N: 1 50 200, then higher while every stream stays correct
#   SERVERS="livechannel livechannel-s3pg" benches/compare.sh 200
#                                       the production backends next to the embedded ones, same run
#
# Servers: livechannel (local folder + SQLite), livechannel-s3pg (s3s-fs on loopback + a throw-away
# PostgreSQL from .ci/postgres.sh; CPU and memory are livechannel's own, not the backends'), nginx.
# Env: SERVERS (default "livechannel nginx"), WARMUP, WINDOW, LATENCY (seconds; defaults 10, 20, 15),
# MAX_N (default 800), OUT (results dir), SKIP_BUILD (use the release binaries as they are),
# DISK_FLOOR_MB (default 4096: a run is stopped when the disk gets this full), WARM_CACHE (default 1:
# fill the page cache once before the runs; 0 skips it).
# Needs: ffmpeg (makes the 720p input), nginx + libnginx-mod-rtmp, python3; for livechannel-s3pg also
# s3s-fs on PATH and Debian's postgresql (run as root). Runs for several minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
WARMUP=${WARMUP:-10}; WINDOW=${WINDOW:-20}; LATENCY=${LATENCY:-15}; MAX_N=${MAX_N:-800}
DISK_FLOOR_MB=${DISK_FLOOR_MB:-4096}
OUT=${OUT:-target/compare}
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

# shellcheck source=benches/common.sh
source benches/common.sh

# livechannel keeps every segment (VOD), so a run writes N x 2.83 Mbit/s for its whole length (ramp,
# warm-up, windows and the check's first pass; the publishers stop before it reads the segments):
# refuse to start when the disk cannot hold the largest run instead of filling it part way.
if [ $# -gt 0 ]; then largest=$(printf '%s\n' "$@" | sort -n | tail -n 1); else largest=$MAX_N; fi
need=$(( largest * 354 * (WARMUP + WINDOW + LATENCY + 20) / 1024 ))  # MiB: 354 KB/s a stream
free=$(( $(df --output=avail -k "$work" | tail -n 1) / 1024 ))
if [ "$free" -lt "$need" ]; then
  echo "compare.sh: N = $largest needs about $need MiB free in $work for livechannel's segments; $free MiB free" >&2
  exit 1
fi
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --quiet --bin livechannel --bin livechannel-bench
input="$OUT/input720.flv"
make_input "$input"

# This machine is a Firecracker guest that hands free memory back to its host (free page reporting):
# a page the guest touches for the first time since then costs a host fault, and a buffered write into
# such pages ran at 0.4-0.9 GB/s against 2-3 GB/s into reclaimed page cache (dd, 2026-12-07). A run that
# starts with 20 GB free then pays that for every segment byte until the page cache has filled once: at
# N = 1000 (354 MB/s) the first minute of a run dropped half the segments, and the same binary dropped
# none once the cache was full. So fill the page cache once, with the zero pages of a sparse file (no
# disk used), and keep it until the end: new writes then reclaim those clean pages, as on a machine
# whose memory has been in use for a while. Both servers run after it. WARM_CACHE=0 skips it.
if [ "${WARM_CACHE:-1}" != 0 ]; then
  avail=$(awk '/MemAvailable/ {print int($2 / 1024)}' /proc/meminfo)
  if [ "$avail" -gt 4096 ]; then
    truncate -s "$((avail - 3072))M" "$work/warm"
    echo "== filling the page cache once ($((avail - 3072)) MiB of a sparse file; see the comment)"
    cat "$work/warm" > /dev/null
  fi
fi

start_livechannel() {  # sets RTMP HTTP PIDS URL; $1: extra config (TOML)
  local dir="$RUN_DIR/livechannel"; mkdir -p "$dir"
  RTMP=$(free_port); HTTP=$(free_port)
  { cat <<TOML
rtmp_listen = "127.0.0.1:$RTMP"
http_listen = "127.0.0.1:$HTTP"
data_dir = "$dir/data"
[channel_defaults]
frag_duration = 2
frag_count = 3
[limits]
max_rtmp_connections = 10000
TOML
    echo "${1:-}"; } > "$dir/config.toml"
  LIVECHANNEL_LOG=warn target/release/livechannel serve --config "$dir/config.toml" > "$dir/log" 2>&1 &
  PIDS=$!
  URL="http://127.0.0.1:$HTTP/live/{name}/playlist.m3u8"
  wait_port "$RTMP"
}

PG_DATA=""
start_livechannel-s3pg() {  # livechannel on s3s-fs + PostgreSQL; S3 requests are counted from s3s's log
  S3_DIR="$RUN_DIR/s3"; mkdir -p "$S3_DIR/root/media"
  local s3port; s3port=$(free_port)
  RUST_LOG=s3s::service=debug s3s-fs --host 127.0.0.1 --port "$s3port" --access-key bench --secret-key bench-secret \
    "$S3_DIR/root" > "$S3_DIR/log" 2>&1 &
  wait_port "$s3port"
  local pg_url
  pg_url=$(bash .ci/postgres.sh 2>"$work/pgdir"); PG_DATA=$(tail -n1 "$work/pgdir")
  start_livechannel "$(cat <<TOML
[storage]
kind = "s3"
endpoint = "http://127.0.0.1:$s3port"
bucket = "media"
access_key_id = "bench"
secret_access_key = "bench-secret"
[database]
url = "$pg_url"
max_connections = 8
TOML
)"
}

after_livechannel-s3pg() {  # json: adds the S3 requests per stored segment, then stops PostgreSQL
  python3 - "$S3_DIR" "$1" <<'PY'
import json, os, re, sys
s3, path = sys.argv[1:3]
reqs = re.findall(r"s3s::service: req: Request \{ method: (\w+), uri: (\S+),", open(os.path.join(s3, "log")).read())
segments = sum(f.endswith(".ts") for _, _, files in os.walk(os.path.join(s3, "root")) for f in files)
r = json.load(open(path))
kinds = {}
for method, uri in reqs:
    k = f"{method} {'segment' if '.ts' in uri else 'playlist' if '.m3u8' in uri else 'other'}"
    kinds[k] = kinds.get(k, 0) + 1
writes = sum(v for k, v in kinds.items() if not k.startswith(("GET", "HEAD")))
r["s3_requests"] = kinds
r["s3_segments_stored"] = segments
# Writes are what storing costs; reads follow the players (here: the generator's playlist polling).
r["s3_requests_per_segment"] = writes / segments if segments else None
json.dump(r, open(path, "w"), indent=2)
print(f"  S3: {len(reqs)} requests ({writes} writes) for {segments} segments: {kinds}")
PY
  runuser -u postgres -- "$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)/pg_ctl" -D "$PG_DATA" -m fast stop >/dev/null
}

start_nginx() {
  local dir="$RUN_DIR/nginx"; mkdir -p "$dir/hls" "$dir/tmp"
  RTMP=$(free_port); HTTP=$(free_port)
  cat > "$dir/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
user root;            # the benchmark runs as root; its temp dirs are private
worker_processes 1;   # nginx-rtmp's HLS needs a single worker (or rtmp_auto_push)
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 10000; }
rtmp {
  server {
    listen 127.0.0.1:$RTMP;
    chunk_size 4096;
    application live {
      live on;
      hls on;
      hls_path $dir/hls;
      hls_nested on;
      hls_fragment 2s;
      hls_playlist_length 6s;
    }
  }
}
http {
  access_log off;
  client_body_temp_path $dir/tmp; proxy_temp_path $dir/tmp; fastcgi_temp_path $dir/tmp;
  uwsgi_temp_path $dir/tmp; scgi_temp_path $dir/tmp;
  types { application/vnd.apple.mpegurl m3u8; video/mp2t ts; }
  server {
    listen 127.0.0.1:$HTTP;
    location /live/ { alias $dir/hls/; add_header Cache-Control no-cache; }
  }
}
CONF
  nginx -c "$dir/nginx.conf" -p "$dir" > "$dir/log" 2>&1 &
  wait_port "$RTMP"
  sleep 0.5
  PIDS=$(pgrep -d, -f "nginx.*$dir/nginx.conf" || true)
  PIDS="$PIDS,$(pgrep -d, -P "${PIDS%%,*}" || true)"; PIDS=${PIDS%,}
  URL="http://127.0.0.1:$HTTP/live/{name}/index.m3u8"
}

stop_server() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; }

# Each run writes into a folder of its own, kept until the end: deleting a run's files right before the
# next run made that run pay for them. On ext4 without a journal (this machine's disk) the inode allocator
# skips every inode deleted in the last 1-6 minutes, looking each one up, so after a deletion of thousands
# of segment files every new file scanned past them (`recently_deleted` + `find_get_block_common`: 15-20 %
# of the server's CPU in profiles at N = 200). Earlier runs are deleted only when the next one would not
# fit, and the script says so.
run_dir() {  # server N: sets RUN_DIR, after freeing the disk if this run needs it
  local need free
  need=$(( $2 * 354 * (WARMUP + WINDOW + LATENCY + 20) / 1024 ))
  free=$(( $(df --output=avail -k "$work" | tail -n 1) / 1024 ))
  if [ "$free" -lt "$((need + 1024))" ] && [ -n "$(ls -A "$work/runs")" ]; then
    echo "  (deleting the earlier runs' files to make room: this run's file creations may pay for the deletion)"
    rm -rf "${work:?}/runs/"*; sync
  fi
  RUN_DIR="$work/runs/$1-$2"; mkdir -p "$RUN_DIR"
}
mkdir -p "$work/runs"

run() {  # server N
  local server=$1 n=$2
  run_dir "$server" "$n"
  "start_$server"
  ulimit -n 20000 || true
  # A run that overruns (a server that cannot keep up, a check that hangs) must stop, not fill the
  # disk (a run on 2026-12-07 wrote 48 GB and filled it).
  ( while sleep 2; do
      if [ $(( $(df --output=avail -k "$work" | tail -n 1) / 1024 )) -lt "$DISK_FLOOR_MB" ]; then
        echo "  compare.sh: under $DISK_FLOOR_MB MiB free in $work: stopping the $server run at N = $n" >&2
        kill -KILL $(pidof livechannel-bench) 2>/dev/null || true; exit
      fi
    done ) &
  local guard=$!
  target/release/livechannel-bench --rtmp "127.0.0.1:$RTMP" --file "$input" --streams "$n" --ramp 2 \
    --warmup "$WARMUP" --window "$WINDOW" --latency-window "$LATENCY" --hls "$URL" --pids "$PIDS" \
    --label "$server" --json "$OUT/$server-$n.json" | sed 's/^/  /'
  kill "$guard" 2>/dev/null || true
  stop_server
  if declare -F "after_$server" >/dev/null; then "after_$server" "$OUT/$server-$n.json"; fi
}

ns=("$@")
read -r -a servers <<< "${SERVERS:-livechannel nginx}"
for server in "${servers[@]}"; do
  if [ ${#ns[@]} -gt 0 ]; then
    for n in "${ns[@]}"; do run "$server" "$n"; done
  else
    for n in 1 50 200; do run "$server" "$n"; done
    n=400
    # Higher while every stream still produces every segment on time.
    while [ "$n" -le "$MAX_N" ] && python3 - "$OUT/$server-$((n == 400 ? 200 : n / 2)).json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
h = r["hls"]
sys.exit(0 if h["streams_ok"] == r["streams"] and h["streams_late"] == 0 and r["total_errors"] == 0 else 1)
PY
    do run "$server" "$n"; n=$((n * 2)); done
  fi
done

python3 benches/compare_table.py "$OUT" "${servers[0]}" "${servers[1]:-nginx}"
