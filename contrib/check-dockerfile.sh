#!/usr/bin/env bash
# Runs the Dockerfile's steps without Docker (the development machine has no Docker daemon):
#   1. `COPY . .`: the committed tree (git archive; .dockerignore's entries are never committed) in a
#      clean folder;
#   2. every RUN line of the build stage, there, with a fresh target folder;
#   3. the runtime stage's contract: the binary needs only what debian:bookworm-slim has (ldd), and
#      ENTRYPOINT + CMD with the image's ENV serve /healthz and stop cleanly on STOPSIGNAL.
# The listen ports and data folder are replaced with free ones in a temporary folder; the runtime
# stage's apt-get/useradd lines are not run (they would change this machine).
# Usage: contrib/check-dockerfile.sh   (a release build: several minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
dockerfile="$PWD/Dockerfile"
work="$(mktemp -d)"
trap 'kill "${server:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/src" "$work/data"

echo "== COPY . . (git archive HEAD into $work/src)"
git archive --format=tar HEAD | tar -x -C "$work/src"

echo "== build stage RUN lines"
want_rust="$(sed -n 's/^FROM rust:\([0-9.]*\)-.* AS build$/\1/p' "$dockerfile")"
echo "image toolchain rust:$want_rust; here: $(rustc --version)"
awk '/^FROM /{stage++} stage==1 && /^RUN /{sub(/^RUN /, ""); print}' "$dockerfile" > "$work/build-steps.sh"
[ -s "$work/build-steps.sh" ] || { echo "no RUN line in the build stage"; exit 1; }
cat "$work/build-steps.sh"
(cd "$work/src" && env -u CARGO_TARGET_DIR bash -euo pipefail "$work/build-steps.sh")
bin="$work/src/$(sed -n 's#^COPY --from=build /src/\([^ ]*\) .*#\1#p' "$dockerfile")"
[ -x "$bin" ] || { echo "the runtime stage copies $bin, which the build did not make"; exit 1; }

echo "== runtime stage: shared libraries (debian:bookworm-slim has libc6 and libgcc-s1)"
ldd "$bin"
if ldd "$bin" | grep -v -E 'linux-vdso|ld-linux|libc\.so|libm\.so|libgcc_s\.so|libpthread\.so|libdl\.so|librt\.so' | grep -q '=>'; then
  echo "the binary needs a library the slim image does not have"; exit 1
fi

echo "== runtime stage: ENTRYPOINT + CMD with the image's ENV"
# The ENV instruction and its continuation lines (not the comments, which show `docker run -e` examples).
env_lines="$(awk '/^ENV /{on=1} on{print} on && !/\\$/{on=0}' "$dockerfile")"
echo "$env_lines"
# shellcheck disable=SC2046
export $(echo "$env_lines" | grep -o 'LIVECHANNEL_[A-Z_]*=[^ \\]*')
export LIVECHANNEL_DATA_DIR="$work/data" LIVECHANNEL_RTMP_LISTEN=127.0.0.1:0 LIVECHANNEL_HTTP_LISTEN=127.0.0.1:0
cmd="$(sed -n 's/^CMD \["\(.*\)"\]$/\1/p' "$dockerfile")"
"$bin" $cmd > "$work/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do grep -q "livechannel listening" "$work/server.log" && break; sleep 0.1; done
http="$(sed -n 's/.*livechannel listening.*http=\([0-9.:]*\).*/\1/p' "$work/server.log" | sed 's/\x1b\[[0-9;]*m//g')"
[ -n "$http" ] || { cat "$work/server.log"; exit 1; }
python3 - "$http" <<'PY'
import sys, urllib.request
body = urllib.request.urlopen(f"http://{sys.argv[1]}/healthz", timeout=5).read()
print("healthz:", body.decode().strip())
PY
signal="$(sed -n 's/^STOPSIGNAL //p' "$dockerfile")"
kill -s "${signal#SIG}" "$server"
wait "$server"
echo "stopped on $signal with exit status $?"
server=
echo "OK: the Dockerfile's steps build a binary that serves and stops cleanly"
