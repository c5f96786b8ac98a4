# A throwaway PostgreSQL server for tests: source this file (bash), then
#   start_pg; trap stop_pg EXIT
# or run it: `bash .ci/pg.sh` starts a server, prints its URL on stdout (and
# on stderr how to stop it), and leaves it running; `bash .ci/pg.sh stop DIR`
# stops it and removes DIR.
# start_pg installs PostgreSQL from the OS packages when it is missing (as
# root), creates a cluster in a temporary directory owned by the server user
# (postgres when run as root: initdb and postgres refuse root), starts it on
# 127.0.0.1 at the first free port from $PG_PORT (default 55432) with fsync
# on, and exports DATABASE_URL PGHOST PGPORT PGUSER PGPASSWORD PG_BIN PG_DIR
# PG_PORT. Extra server options: $PG_EXTRA_OPTS. Its log: $PG_DIR/server.log.
start_pg() {
  local bin as=()
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
  if [ ! -x "$bin/initdb" ]; then
    [ "$(id -u)" = 0 ] || { echo "start_pg: install postgresql first" >&2; return 1; }
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends postgresql >/dev/null || return 1
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
  fi
  [ "$(id -u)" = 0 ] && as=(runuser -u postgres -- env -C /)   # initdb/postgres refuse root
  PG_DIR=$(mktemp -d) || return 1                               # data/, socket, logs
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$PG_DIR"
  "${as[@]}" test -w "$PG_DIR" || { echo "start_pg: $PG_DIR not writable by server user" >&2; return 1; }
  local p=${PG_PORT:-55432}
  while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done   # first free port
  export PG_BIN=$bin PG_DIR PG_PORT=$p PGHOST=127.0.0.1 PGPORT=$p PGUSER=postgres
  export PGPASSWORD=${PGPASSWORD:-pgtest}
  "${as[@]}" sh -c 'umask 077; printf "%s\n" "$1" > "$2/pw"' sh "$PGPASSWORD" "$PG_DIR" || return 1
  "${as[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres -E UTF8 --locale=C.UTF-8 \
      --auth-local=trust --auth-host=scram-sha-256 --pwfile="$PG_DIR/pw" >"$PG_DIR/initdb.log" 2>&1 \
    || { cat "$PG_DIR/initdb.log" >&2; return 1; }
  rm -f "$PG_DIR/pw"
  "${as[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
      -o "-k $PG_DIR -p $PG_PORT -c listen_addresses=127.0.0.1 ${PG_EXTRA_OPTS:-}" start >/dev/null \
    || { cat "$PG_DIR/server.log" >&2; return 1; }
  export DATABASE_URL="postgres://postgres:$PGPASSWORD@127.0.0.1:$PG_PORT/postgres?sslmode=disable"
}
stop_pg() {
  [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR" ] || return 0
  local as=(); [ "$(id -u)" = 0 ] && as=(runuser -u postgres -- env -C /)
  "${as[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 60 stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"; unset PG_DIR
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  case "${1:-start}" in
    start)
      start_pg || exit 1
      echo "$DATABASE_URL"
      echo "PostgreSQL $PG_BIN on 127.0.0.1:$PG_PORT (data, socket and log in $PG_DIR);" \
        "stop it with: bash $0 stop $PG_DIR" >&2 ;;
    stop)
      [ -n "${2:-}" ] || { echo "usage: $0 stop DIR" >&2; exit 2; }
      PG_DIR=$2 PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1) stop_pg ;;
    *) echo "usage: $0 [start | stop DIR]" >&2; exit 2 ;;
  esac
fi
