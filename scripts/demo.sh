#!/usr/bin/env bash
# The cloud half of `make demo`: the whole product on 127.0.0.1.
#
#   1. Postgres and Redis (scripts/services.sh)
#   2. `limitr dev` (API and worker in one process) on a free port, on a fresh database
#   3. a tenant bootstrapped with the operator token (POST /v1/tenants)
#   4. the quick-start policy uploaded and published (POST /v1/policies, .../publish)
#   5. an SDK key (POST /v1/keys)
#   6. examples/cloud: the quick-start code in cloud mode — it enforces, sees a changed
#      limit published and enforces it, flushes on Close and prints the server's usage
#   then the worker's aggregation counter from /metrics (served on an internal address)
#   7. the policy published to staging (a non-live environment) and an SDK key for it
#   8. examples/billing: billing settings, the upcoming invoice of the customer
#      examples/cloud served (equal to the SDK's live estimate), then a month on a test
#      clock in staging: a customer on the clock, usage, the clock advanced past the
#      period's end and grace period, and the finalized invoice
#   9. examples/alerts: a webhook receiver, an alert channel and a usage_percent rule;
#      a starter customer crosses 80 % of its limit, then is denied at it, and each
#      alert reaches the receiver once, signed
#
# Everything it starts is stopped, and the database dropped, on exit (also on failure).
# Needs Go, curl and psql (scripts/services.sh installs PostgreSQL with its client).
set -euo pipefail
cd "$(dirname "$0")/.."

GO="${GO:-go}"
say() { echo "$*"; }
die() { echo "demo: $*" >&2; exit 1; }

command -v "$GO" >/dev/null 2>&1 || die "Go is required: install Go 1.26+ from https://go.dev/dl and put it on PATH"
command -v curl >/dev/null 2>&1 || die "curl is required (apt-get install curl)"

say "== Limitr cloud mode: control plane, worker and SDK =="
say
say "1. Postgres and Redis on 127.0.0.1 (scripts/services.sh)"
services_env="$(scripts/services.sh)" || die "scripts/services.sh could not bring Postgres and Redis up (see above)"
eval "$services_env"
command -v psql >/dev/null 2>&1 || die "psql is required to create the demo database (apt-get install postgresql-client)"
[ -n "${LIMITR_TEST_DATABASE_URL:-}" ] || die "scripts/services.sh did not print LIMITR_TEST_DATABASE_URL"
admin_url="$LIMITR_TEST_DATABASE_URL"
redis_url="${LIMITR_TEST_REDIS_URL:-}"

rand_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }
work="$(mktemp -d)"
db="limitr_demo_$(rand_hex 4)"
base_part="${admin_url%%\?*}"
query_part="${admin_url#"$base_part"}"
db_url="${base_part%/*}/$db$query_part"
dev_pid=""

cleanup() {
  local code=$?
  if [ -n "$dev_pid" ] && kill -0 "$dev_pid" 2>/dev/null; then
    kill -TERM "$dev_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$dev_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$dev_pid" 2>/dev/null || true
    wait "$dev_pid" 2>/dev/null || true
  fi
  psql "$admin_url" -qX -c "drop database if exists $db with (force)" >/dev/null 2>&1 ||
    echo "demo: could not drop database $db; drop it by hand" >&2
  if [ "$code" != 0 ] && [ -s "$work/dev.log" ]; then
    echo "demo: last lines of the limitr dev log:" >&2
    tail -n 20 "$work/dev.log" >&2
  fi
  rm -rf "$work"
  exit "$code"
}
trap cleanup EXIT

psql "$admin_url" -qX -v ON_ERROR_STOP=1 -c "create database $db" >/dev/null ||
  die "could not create database $db with $admin_url"

say "2. limitr dev: the API and the worker in one process, on database $db"
"$GO" build -o "$work/limitr" ./cmd/limitr || die "go build ./cmd/limitr failed"
token="op-$(rand_hex 12)"
dev_args=(dev --addr 127.0.0.1:0 --database-url "$db_url" --operator-token "$token" --poll-interval 200ms --log-level warn)
[ -n "$redis_url" ] && dev_args+=(--redis-url "$redis_url")
"$work/limitr" "${dev_args[@]}" >"$work/dev.out" 2>"$work/dev.log" &
dev_pid=$!
base=""
metrics=""
for _ in $(seq 1 300); do
  base="$(sed -n 's/^limitr dev: listening on //p' "$work/dev.out" | head -n1)"
  metrics="$(sed -n 's/^limitr dev: metrics on //p' "$work/dev.out" | head -n1)"
  [ -n "$base" ] && [ -n "$metrics" ] && break
  kill -0 "$dev_pid" 2>/dev/null || die "limitr dev exited before listening"
  sleep 0.1
done
[ -n "$base" ] || die "limitr dev did not print its address within 30 s"
[ -n "$metrics" ] || die "limitr dev did not print its metrics address within 30 s"
say "   listening on $base (Redis: ${redis_url:-none})"

# api METHOD PATH KEY [BODY] -> prints the body; fails on an unexpected status.
api() {
  local method=$1 path=$2 key=$3 body=${4:-} want=${5:-2}
  local status
  status=$(curl -sS -o "$work/body" -w '%{http_code}' -X "$method" "$base$path" \
    -H "Authorization: Bearer $key" -H 'Content-Type: application/json' ${body:+--data-binary "$body"}) ||
    die "$method $path: no answer"
  case "$status" in
    "$want"*) cat "$work/body" ;;
    *) die "$method $path: HTTP $status: $(cat "$work/body")" ;;
  esac
}
# field NAME: the first "NAME": "string" or "NAME": number of the JSON on stdin.
field() { grep -o "\"$1\" *: *\(\"[^\"]*\"\|[0-9]*\)" | head -n1 | sed 's/^[^:]*: *//; s/"//g'; }

say "3. Bootstrap a tenant: POST /v1/tenants (operator token)"
admin_key="$(api POST /v1/tenants "$token" '{"slug": "demo", "name": "Demo Inc"}' | field secret)"
[ -n "$admin_key" ] || die "no admin key in the bootstrap reply"
say "   tenant demo, environments production and staging, admin key ${admin_key:0:14}…"

say "4. Publish the quick-start policy: POST /v1/policies, POST /v1/environments/production/publish"
version="$(api POST /v1/policies "$admin_key" "@examples/quickstart/policy.json" | field number)"
[ -n "$version" ] || die "no version number in the policy reply"
api POST /v1/environments/production/publish "$admin_key" "{\"version\": $version}" >/dev/null
say "   examples/quickstart/policy.json is version $version, active in production"

say "5. Create an SDK key for production: POST /v1/keys"
sdk_key="$(api POST /v1/keys "$admin_key" '{"kind": "sdk", "environment": "production", "name": "demo app"}' | field secret)"
[ -n "$sdk_key" ] || die "no SDK key in the reply"
say "   ${sdk_key:0:12}…"

say "6. The application, in cloud mode: go run ./examples/cloud"
say
LIMITR_BASE_URL="$base" LIMITR_SDK_KEY="$sdk_key" LIMITR_ADMIN_KEY="$admin_key" LIMITR_ENVIRONMENT=production \
  "$GO" run ./examples/cloud || die "examples/cloud failed"
say

say "Meanwhile the worker folded the usage into per-customer meters (GET /metrics on the internal metrics address):"
rows=""
for _ in $(seq 1 50); do
  rows="$(curl -sS "$metrics" | sed -n 's/^limitr_aggregation_rows_total \([0-9.e+]*\)$/\1/p')"
  [ -n "$rows" ] && [ "$rows" != 0 ] && break
  sleep 0.2
done
say "   limitr_aggregation_rows_total ${rows:-0}"
say

say "== Billing: invoices rated on the server, and a month on a test clock =="
say
say "7. Publish the policy to staging, a non-live environment (test clocks are refused in a live one), with an SDK key"
api POST /v1/environments/staging/publish "$admin_key" "{\"version\": $version}" >/dev/null
test_sdk_key="$(api POST /v1/keys "$admin_key" '{"kind": "sdk", "environment": "staging", "name": "demo billing"}' | field secret)"
[ -n "$test_sdk_key" ] || die "no SDK key for staging in the reply"
say "   version $version active in staging; SDK key ${test_sdk_key:0:12}…"

say "8. The billing client: go run ./examples/billing"
say
LIMITR_BASE_URL="$base" LIMITR_ADMIN_KEY="$admin_key" LIMITR_SDK_KEY="$sdk_key" LIMITR_ENVIRONMENT=production \
  LIMITR_TEST_SDK_KEY="$test_sdk_key" LIMITR_TEST_ENVIRONMENT=staging \
  "$GO" run ./examples/billing || die "examples/billing failed"
say
say "== Alerts: a rule fires when the starter customer nears and hits its limit =="
say
say "9. The alerts client: go run ./examples/alerts"
say
LIMITR_BASE_URL="$base" LIMITR_ADMIN_KEY="$admin_key" LIMITR_SDK_KEY="$sdk_key" LIMITR_ENVIRONMENT=production \
  "$GO" run ./examples/alerts || die "examples/alerts failed"
say
say "== Analytics: margins as invoiced, and a price change tried on this month's usage =="
say
say "10. The analytics client: go run ./examples/analytics"
say
LIMITR_BASE_URL="$base" LIMITR_ADMIN_KEY="$admin_key" LIMITR_ENVIRONMENT=production \
  "$GO" run ./examples/analytics || die "examples/analytics failed"
say
say "== The dashboard, served by the same process =="
say
say "11. A first owner from the CLI (limitr admin create-user), then a login through the form"
printf '%s\n' "demo-password-$(rand_hex 4)" > "$work/owner.pw"
"$work/limitr" admin create-user --database-url "$db_url" --tenant demo --email owner@demo.test --role owner \
  --password-stdin < "$work/owner.pw" >/dev/null || die "limitr admin create-user failed"
jar="$work/cookies"
login_status=$(curl -sS -c "$jar" -o "$work/login.html" -w '%{http_code}' "$base/login") || die "GET /login: no answer"
[ "$login_status" = 200 ] || die "GET /login: HTTP $login_status"
csrf="$(sed -n 's/.*name="csrf_token" value="\([^"]*\)".*/\1/p' "$work/login.html" | head -n1)"
[ -n "$csrf" ] || die "GET /login: no CSRF token in the form"
login_status=$(curl -sS -b "$jar" -c "$jar" -o /dev/null -w '%{http_code}' -H "Origin: $base" \
  --data-urlencode "csrf_token=$csrf" --data-urlencode "email=owner@demo.test" --data-urlencode "password=$(cat "$work/owner.pw")" \
  "$base/login") || die "POST /login: no answer"
[ "$login_status" = 303 ] || die "POST /login: HTTP $login_status, want 303"
overview_status=$(curl -sS -b "$jar" -o "$work/overview.html" -w '%{http_code}' "$base/") || die "GET /: no answer"
[ "$overview_status" = 200 ] && grep -q '<svg' "$work/overview.html" || die "GET / after login: HTTP $overview_status, or no chart"
say "   POST $base/login as owner@demo.test → 303; GET / → 200, the Overview with its charts of the demo's usage"
say "   (run \`go run ./cmd/limitr dev\` and \`limitr admin create-user\` to keep one up: README, The dashboard)"
say
say "demo: done; stopping limitr dev and dropping $db"
