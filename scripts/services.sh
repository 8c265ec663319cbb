#!/usr/bin/env bash
# Makes sure PostgreSQL and Redis answer on 127.0.0.1 for the test suite and the demo.
# Order of preference: use a running server, start an installed one, install from Debian
# packages (needs root and apt). Prints the URLs to use as shell exports on stdout, so
# callers can `eval "$(scripts/services.sh)"`; progress goes to stderr.
set -euo pipefail

PG_PORT="${LIMITR_PG_PORT:-5432}"
REDIS_PORT="${LIMITR_REDIS_PORT:-6379}"

log() { echo "services: $*" >&2; }

have() { command -v "$1" >/dev/null 2>&1; }

apt_install() {
  if ! have apt-get; then
    log "cannot install $*: no apt-get on this machine; install them yourself"
    return 1
  fi
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    if have sudo; then sudo="sudo"; else log "need root to install $*"; return 1; fi
  fi
  log "installing $* from Debian packages"
  $sudo apt-get update -qq >&2 || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >&2
}

pg_up() {
  if have pg_isready; then
    pg_isready -q -h 127.0.0.1 -p "$PG_PORT"
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$PG_PORT") 2>/dev/null
  fi
}

start_postgres() {
  if pg_up; then log "postgres already running on 127.0.0.1:$PG_PORT"; return 0; fi
  if ! have pg_ctlcluster && ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    apt_install postgresql postgresql-client || return 1
  fi
  if have pg_ctlcluster; then
    local ver
    ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1 || true)
    if [ -z "$ver" ]; then
      ver=$(ls /usr/lib/postgresql | sort -V | tail -n1)
      pg_createcluster "$ver" main >&2
    fi
    log "starting postgres $ver"
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start >&2 || true
  fi
  for _ in $(seq 1 60); do pg_up && break; sleep 0.5; done
  if ! pg_up; then log "postgres did not come up on 127.0.0.1:$PG_PORT"; return 1; fi
}

# The suite connects as the OS user over TCP; make sure a matching superuser exists and
# that loopback connections are trusted (the CI machine is single-tenant and sealed).
prepare_postgres() {
  local user
  user=$(id -un)
  if psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -tAc "select 1" >/dev/null 2>&1; then
    if ! psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -tAc "select 1 from pg_roles where rolname='$user'" | grep -q 1; then
      psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qc "create role \"$user\" superuser login" >&2 || true
    fi
  elif have su && id postgres >/dev/null 2>&1; then
    su postgres -c "psql -p $PG_PORT -tAc \"select 1 from pg_roles where rolname='$user'\"" | grep -q 1 ||
      su postgres -c "psql -p $PG_PORT -qc 'create role \"$user\" superuser login'" >&2 || true
  fi
}

redis_up() {
  if have redis-cli; then
    [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null || true)" = "PONG" ]
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null
  fi
}

start_redis() {
  if redis_up; then log "redis already running on 127.0.0.1:$REDIS_PORT"; return 0; fi
  if ! have redis-server; then apt_install redis-server || return 1; fi
  mkdir -p /tmp/limitr-redis
  log "starting redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir /tmp/limitr-redis --logfile /tmp/limitr-redis/redis.log >&2
  for _ in $(seq 1 40); do redis_up && break; sleep 0.25; done
  if ! redis_up; then log "redis did not come up on 127.0.0.1:$REDIS_PORT"; return 1; fi
}

start_postgres
prepare_postgres
start_redis

echo "export LIMITR_TEST_DATABASE_URL='postgres://$(id -un)@127.0.0.1:$PG_PORT/postgres?sslmode=disable'"
echo "export LIMITR_TEST_REDIS_URL='redis://127.0.0.1:$REDIS_PORT/0'"
