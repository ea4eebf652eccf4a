#!/usr/bin/env bash
# What durable callbacks cost the media path: the same N real-time publishers (livechannel-bench), once with
# no callbacks configured and once with every kind configured (Huawei stream notification and recording
# callback, Aliyun ingest, recording and an all-channel event subscription) pointing at a receiver that is
# down, so every callback fails and is retried during the whole run. Reports the server's CPU per
# stream-second, RSS, and the outbox size. Loopback only; bounded by N and the windows.
#
#   N=100 bash benches/callbacks.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-100}
WARMUP=${WARMUP:-10}
WINDOW=${WINDOW:-20}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
cargo build --release --quiet --bin livechannel --bin livechannel-bench
input=fixtures/media/av_bframes.flv

run() {  # label configure?
  local label=$1 configure=$2 dir
  dir=$(mktemp -d)
  cat > "$dir/config.toml" <<CONF
rtmp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
data_dir = "$dir/data"
[channel_defaults]
frag_duration = 2
[[access_keys]]
id = "AKIDEXAMPLE"
secret = "SECRETEXAMPLE"
[[auth_tokens]]
token = "bench-token-0123456789"
project_id = "0123456789abcdef0123456789abcdef"
[[buckets]]
name = "live"
acl = "public-read-write"
auto_create_channels = true
[notify]
allowed_destinations = ["127.0.0.0/8"]   # the dead receiver is on loopback
CONF
  target/release/livechannel serve --config "$dir/config.toml" > /dev/null 2> "$dir/log" &
  local pid=$!
  for _ in $(seq 100); do grep -q "livechannel listening" "$dir/log" && break; sleep 0.1; done
  local rtmp http
  rtmp=$(grep -o 'rtmp=[0-9.:]*' "$dir/log" | head -n1 | cut -d= -f2)
  http=$(grep -o 'http=[0-9.:]*' "$dir/log" | head -n1 | cut -d= -f2)
  if [ "$configure" = yes ]; then
    local dead="http://127.0.0.1:9"   # discard port: nothing listens, every attempt is refused
    curl -sf -X PUT -H "X-Auth-Token: bench-token-0123456789" -H "Content-Type: application/json" \
      "http://$http/v1/0123456789abcdef0123456789abcdef/notifications/publish?domain=live" \
      -d "{\"url\": \"$dead/hw\", \"auth_sign_key\": \"0123456789abcdef0123456789abcdef\"}"
    curl -sf -X POST -H "X-Auth-Token: bench-token-0123456789" -H "Content-Type: application/json" \
      "http://$http/v1/0123456789abcdef0123456789abcdef/record/callbacks" \
      -d "{\"publish_domain\": \"live\", \"app\": \"live\", \"notify_callback_url\": \"$dead/hwrec\",
           \"notify_event_subscription\": [\"RECORD_START\", \"RECORD_NEW_FILE_START\", \"RECORD_FILE_COMPLETE\", \"RECORD_OVER\"]}" > /dev/null
    python3 - "$http" "$dead" <<'PY'
import base64, hashlib, hmac, sys, time, urllib.parse, urllib.request, uuid
http, dead = sys.argv[1], sys.argv[2]
def call(action, **params):
    p = dict(params, Action=action, Version="2016-11-01", Format="JSON", AccessKeyId="AKIDEXAMPLE",
             SignatureMethod="HMAC-SHA1", SignatureVersion="1.0", SignatureNonce=uuid.uuid4().hex,
             Timestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    enc = lambda s: urllib.parse.quote(str(s), safe="-_.~")
    canon = "&".join(f"{enc(k)}={enc(v)}" for k, v in sorted(p.items()))
    sts = "POST&%2F&" + enc(canon)
    p["Signature"] = base64.b64encode(hmac.new(b"SECRETEXAMPLE&", sts.encode(), hashlib.sha1).digest()).decode()
    q = "&".join(f"{enc(k)}={enc(v)}" for k, v in p.items())
    urllib.request.urlopen(urllib.request.Request(f"http://{http}/?{q}", method="POST"), timeout=5).read()
call("SetLiveStreamsNotifyUrlConfig", DomainName="live", NotifyUrl=f"{dead}/ingest")
call("AddLiveRecordNotifyConfig", DomainName="live", NotifyUrl=f"{dead}/rec", NeedStatusNotify="true")
call("CreateEventSub", AppId="live", ChannelId="*", **{"Events.1": "ChannelEvent", "Events.2": "UserEvent"},
     CallbackUrl=f"{dead}/sub")
PY
  fi
  ulimit -n 20000 || true
  target/release/livechannel-bench --rtmp "$rtmp" --file "$input" --streams "$N" --ramp 2 --warmup "$WARMUP" \
    --window "$WINDOW" --latency-window 5 --hls "http://$http/live/{name}/playlist.m3u8" --pids "$pid" \
    --label "$label" --json "$OUT/$label.json" | sed 's/^/  /'
  local pending
  pending=$(python3 -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute(\"select count(*), coalesce(sum(attempts),0) from outbox where state='pending'\").fetchone())" "$dir/data/meta.db")
  echo "  $label: outbox pending (rows, attempts so far) = $pending"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

run no-callbacks no
run dead-receiver yes
echo "reports in $OUT"
