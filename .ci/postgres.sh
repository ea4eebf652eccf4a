#!/usr/bin/env bash
# Starts a throw-away PostgreSQL cluster (Debian's postgresql package) as the postgres user, on a free
# loopback port, in a temporary folder, with a `livechannel` role that may create databases (each test
# creates its own). Prints the URL for LIVECHANNEL_TEST_POSTGRES on stdout; stop it with
#   pg_ctl -D <folder> stop   (the folder is the last line on stderr).
# Usage: url=$(.ci/postgres.sh)
set -euo pipefail
BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)"
DIR="$(mktemp -d /tmp/livechannel-pg.XXXXXX)"
chown postgres "$DIR"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
as_pg() { (cd / && runuser -u postgres -- "$@"); }
# Password auth over TCP, as a deployment would have it; the socket in the folder stays trusted for setup.
as_pg "$BIN/initdb" -D "$DIR/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$DIR/initdb.log"
as_pg "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w \
  -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off" start >/dev/null
as_pg "$BIN/psql" -q -h "$DIR" -p "$PORT" -U postgres -d postgres \
  -c "CREATE ROLE livechannel LOGIN CREATEDB PASSWORD 'livechannel-secret'" \
  -c "CREATE DATABASE livechannel OWNER livechannel"
echo "postgres://livechannel:livechannel-secret@127.0.0.1:$PORT/livechannel"
echo "$DIR/data" >&2
