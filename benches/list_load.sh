#!/usr/bin/env bash
# List routes under load: the real voxgate binary with N stored calls (seeded in bulk with
# SQL, not through the API), wrk with C connections against each list route in turn.
# Prints requests/s and latency percentiles per route. See benches/README.md.
#
#   benches/list_load.sh [--database sqlite|postgres|both] [--calls N] [--duration S]
#                        [--connections C] [--threads T] [--profile release|dev]
#                        [--bin PATH] [--pg-url URL] [--min-rps R] [--max-p99 MS] [--keep]
#   benches/list_load.sh --smoke   # 2,000 calls, 2 s per route, SQLite and PostgreSQL,
#                                  # debug build; fails on any error response
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

DATABASE=both CALLS=100000 DURATION=10 CONNS=32 THREADS=2 PROFILE=release BIN= KEEP=0 SMOKE=0
PG_URL=postgres://postgres@127.0.0.1:5432 MIN_RPS=0 MAX_P99=0
usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while (($#)); do
  case $1 in
    --database) DATABASE=$2; shift 2 ;;
    --calls) CALLS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --profile) PROFILE=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --pg-url) PG_URL=$2; shift 2 ;;
    --min-rps) MIN_RPS=$2; shift 2 ;;
    --max-p99) MAX_P99=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --smoke) SMOKE=1 CALLS=2000 DURATION=2 CONNS=8 PROFILE=dev; shift ;;
    -h|--help) usage 0 ;;
    *) echo "list_load: unknown argument $1" >&2; usage 2 ;;
  esac
done
for v in CALLS DURATION CONNS THREADS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "list_load: --${v,,} must be a positive integer" >&2; exit 2; }
done
[[ $MIN_RPS =~ ^[0-9]+$ && $MAX_P99 =~ ^[0-9]+$ ]] || { echo "list_load: --min-rps and --max-p99 are whole numbers" >&2; exit 2; }
case $DATABASE in sqlite) DBS=(sqlite) ;; postgres) DBS=(postgres) ;; both) DBS=(sqlite postgres) ;;
  *) echo "list_load: --database sqlite|postgres|both" >&2; exit 2 ;; esac
[[ $PROFILE == release || $PROFILE == dev ]] || { echo "list_load: --profile release|dev" >&2; exit 2; }

log() { printf 'list_load: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
for cmd in wrk curl ss awk sqlite3 psql; do
  command -v "$cmd" >/dev/null || die "$cmd not found (scripts/install-test-deps.sh installs it)"
done

# ---- build ------------------------------------------------------------------------
if [[ -z $BIN ]]; then
  log "building voxgate ($PROFILE)"
  BIN=$(cargo build --profile "$PROFILE" --bin voxgate --message-format=json-render-diagnostics \
    | grep -o '"executable":"[^"]*/voxgate"' | tail -n1 | cut -d'"' -f4)
  [[ -n $BIN && -x $BIN ]] || die "cargo build did not report the voxgate executable"
fi
[[ -x $BIN ]] || die "$BIN is not an executable"
BUILD_LABEL="binary $BIN"
[[ $BIN == */release/* ]] && BUILD_LABEL="release build"
[[ $BIN == */debug/* ]] && BUILD_LABEL="debug build"

# ---- workspace and cleanup ----------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/voxgate-list-load.XXXXXX")
VOX_PID= PG_DB=
stop_voxgate() {
  if [[ -n $VOX_PID ]] && kill -0 "$VOX_PID" 2>/dev/null; then
    kill -TERM "$VOX_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$VOX_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$VOX_PID" 2>/dev/null || true
  fi
  VOX_PID=
}
drop_pg() {
  [[ -n $PG_DB ]] && psql "$PG_URL/postgres" -qAt -c "DROP DATABASE IF EXISTS $PG_DB" >/dev/null 2>&1
  PG_DB=
}
cleanup() {
  local rc=$?
  stop_voxgate
  ((KEEP)) || drop_pg
  if ((KEEP)) || ((rc != 0)); then log "files kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$((35000 + RANDOM % 25000))
    [[ -z $(ss -Htuan "( sport = :$p )" 2>/dev/null) ]] && { echo "$p"; return 0; }
  done
  die "no free port found"
}
API_KEY="vxbench_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
AGENTS=20

# ---- seeding ------------------------------------------------------------------------
# Calls between the seeded agents over 30 days (one every 25 s, newest last), two legs
# each, all ended (open calls would make the agents busy and be closed at a restart).
# Ids are `call_` + the zero-padded sequence number: fixed width, so id order is time
# order as with real ids. Statuses: 70 % completed, 10 % each busy, no-answer, canceled.
# One INSERT … SELECT per table: 100,000 calls take a few seconds.
SQL_SQLITE="
WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < $CALLS),
a AS (SELECT id, username, row_number() OVER (ORDER BY id) - 1 AS k FROM agents)
INSERT INTO calls (id, direction, from_uri, to_uri, agent_id, status, started_at, answered_at,
                   ended_at, duration_seconds, hangup_cause, hangup_by, metadata, created_at, updated_at)
SELECT printf('call_%026d', n), 'internal', 'sip:' || c.username || '@voxgate', 'sip:' || e.username || '@voxgate',
       c.id, CASE n % 10 WHEN 7 THEN 'busy' WHEN 8 THEN 'no-answer' WHEN 9 THEN 'canceled' ELSE 'completed' END,
       strftime('%Y-%m-%dT%H:%M:%S.000Z', 1764547200 + n * 25, 'unixepoch'),
       CASE WHEN n % 10 < 7 THEN strftime('%Y-%m-%dT%H:%M:%S.000Z', 1764547200 + n * 25 + 5, 'unixepoch') END,
       strftime('%Y-%m-%dT%H:%M:%S.000Z', 1764547200 + n * 25 + 65, 'unixepoch'),
       CASE WHEN n % 10 < 7 THEN 60 ELSE 0 END, 'BYE', 'caller', NULL,
       strftime('%Y-%m-%dT%H:%M:%S.000Z', 1764547200 + n * 25, 'unixepoch'),
       strftime('%Y-%m-%dT%H:%M:%S.000Z', 1764547200 + n * 25 + 65, 'unixepoch')
FROM seq JOIN a c ON c.k = n % $AGENTS JOIN a e ON e.k = (n + 1) % $AGENTS;
INSERT INTO legs (id, call_id, direction, agent_id, uri, sip_call_id, status, started_at, answered_at, ended_at, hangup_cause)
SELECT 'leg_' || substr(c.id, 6) || '_' || d.k, c.id, d.dir, CASE d.k WHEN 0 THEN c.agent_id ELSE e.id END,
       CASE d.k WHEN 0 THEN c.from_uri ELSE c.to_uri END, 'sipcall-' || c.id || '-' || d.k, c.status,
       c.started_at, c.answered_at, c.ended_at, c.hangup_cause
FROM calls c JOIN agents e ON 'sip:' || e.username || '@voxgate' = c.to_uri
JOIN (SELECT 0 AS k, 'inbound' AS dir UNION ALL SELECT 1, 'outbound') d;
ANALYZE;"
SQL_POSTGRES="
WITH a AS (SELECT id, username, row_number() OVER (ORDER BY id) - 1 AS k FROM agents)
INSERT INTO calls (id, direction, from_uri, to_uri, agent_id, status, started_at, answered_at,
                   ended_at, duration_seconds, hangup_cause, hangup_by, metadata, created_at, updated_at)
SELECT 'call_' || lpad(n::text, 26, '0'), 'internal', 'sip:' || c.username || '@voxgate', 'sip:' || e.username || '@voxgate',
       c.id, CASE n % 10 WHEN 7 THEN 'busy' WHEN 8 THEN 'no-answer' WHEN 9 THEN 'canceled' ELSE 'completed' END,
       to_char(to_timestamp(1764547200 + n * 25) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\".000Z\"'),
       CASE WHEN n % 10 < 7 THEN to_char(to_timestamp(1764547200 + n * 25 + 5) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\".000Z\"') END,
       to_char(to_timestamp(1764547200 + n * 25 + 65) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\".000Z\"'),
       CASE WHEN n % 10 < 7 THEN 60 ELSE 0 END, 'BYE', 'caller', NULL,
       to_char(to_timestamp(1764547200 + n * 25) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\".000Z\"'),
       to_char(to_timestamp(1764547200 + n * 25 + 65) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\".000Z\"')
FROM generate_series(1, $CALLS) n JOIN a c ON c.k = n % $AGENTS JOIN a e ON e.k = (n + 1) % $AGENTS;
INSERT INTO legs (id, call_id, direction, agent_id, uri, sip_call_id, status, started_at, answered_at, ended_at, hangup_cause)
SELECT 'leg_' || substr(c.id, 6) || '_' || d.k, c.id, d.dir, CASE d.k WHEN 0 THEN c.agent_id ELSE e.id END,
       CASE d.k WHEN 0 THEN c.from_uri ELSE c.to_uri END, 'sipcall-' || c.id || '-' || d.k, c.status,
       c.started_at, c.answered_at, c.ended_at, c.hangup_cause
FROM calls c JOIN agents e ON 'sip:' || e.username || '@voxgate' = c.to_uri
CROSS JOIN (VALUES (0, 'inbound'), (1, 'outbound')) AS d(k, dir);
ANALYZE;"

# ---- one run against one database --------------------------------------------------
RESULTS=()
run_db() { # $1 = sqlite | postgres
  local db=$1 url
  if [[ $db == sqlite ]]; then
    url="sqlite://$WORK/$db/voxgate.db"
  else
    PG_DB="vx_list_load_$$"
    psql "$PG_URL/postgres" -qAt -c "DROP DATABASE IF EXISTS $PG_DB" >/dev/null
    psql "$PG_URL/postgres" -qAt -c "CREATE DATABASE $PG_DB" >/dev/null || die "cannot create database $PG_DB at $PG_URL"
    url="$PG_URL/$PG_DB"
  fi
  mkdir -p "$WORK/$db"
  local api_port sip_port
  api_port=$(free_port); sip_port=$(free_port)
  API="http://127.0.0.1:$api_port"
  log "[$db] starting $BIN (API $API)"
  env VOXGATE_DATA_DIR="$WORK/$db" VOXGATE_DATABASE_URL="$url" \
    VOXGATE_SIP_LISTEN_UDP="127.0.0.1:$sip_port" VOXGATE_SIP_LISTEN_TCP="127.0.0.1:$sip_port" \
    VOXGATE_SIP_PUBLIC_ADDR=127.0.0.1 VOXGATE_API_LISTEN="127.0.0.1:$api_port" \
    VOXGATE_API_KEY="$API_KEY" VOXGATE_LOG=warn \
    "$BIN" serve >"$WORK/$db/voxgate.log" 2>&1 &
  VOX_PID=$!
  for _ in $(seq 1 300); do
    kill -0 "$VOX_PID" 2>/dev/null || { tail -n 30 "$WORK/$db/voxgate.log" >&2; die "voxgate exited during start"; }
    curl -fsS -o /dev/null "$API/readyz" 2>/dev/null && break
    sleep 0.1
  done
  curl -fsS -o /dev/null "$API/readyz" || die "voxgate not ready after 30 s"

  local auth=(-H "Authorization: Bearer $API_KEY" -H 'Content-Type: application/json')
  for ((i = 0; i < AGENTS; i++)); do
    curl -fsS -o /dev/null "${auth[@]}" "$API/v1/agents" \
      --data "{\"username\":\"agent$i\",\"password\":\"agent$i-secret\",\"skills\":[\"sales\"]}" \
      || die "POST /v1/agents failed"
  done
  curl -fsS -o /dev/null "${auth[@]}" "$API/v1/trunks" --data '{"name":"sim","provider":"simulated"}' \
    || die "POST /v1/trunks failed"
  curl -fsS -o /dev/null "${auth[@]}" "$API/v1/numbers" \
    --data '{"number":"+14155550100","trunk":"sim","route":{"type":"agent","target":"agent0"}}' \
    || die "POST /v1/numbers failed"
  curl -fsS -o /dev/null "${auth[@]}" "$API/v1/webhooks" \
    --data '{"url":"http://127.0.0.1:9/hook","events":["call.*"]}' || die "POST /v1/webhooks failed"

  local t0=$SECONDS
  log "[$db] seeding $CALLS calls with SQL"
  if [[ $db == sqlite ]]; then
    sqlite3 -bail "$WORK/$db/voxgate.db" ".timeout 10000" "$SQL_SQLITE" >/dev/null || die "seeding SQLite failed"
  else
    psql "$url" -qAt -v ON_ERROR_STOP=1 -c "$SQL_POSTGRES" >/dev/null || die "seeding PostgreSQL failed"
    # What autovacuum does after a bulk insert (its insert threshold), here at once and
    # outside the seeding's transaction: until then no page of the new rows is marked
    # all-visible, PostgreSQL costs every index entry as a table visit, and some filters
    # (a status in a time window) are planned as on no production database.
    psql "$url" -qAt -v ON_ERROR_STOP=1 -c "VACUUM (ANALYZE) calls, legs" >/dev/null \
      || die "VACUUM on PostgreSQL failed"
  fi
  log "[$db] seeded in $((SECONDS - t0)) s"
  local stored
  stored=$(curl -fsS "${auth[@]}" "$API/v1/stats" | grep -o '"calls":[0-9]*' | head -n1 | cut -d: -f2 || true)
  [[ $stored == "$CALLS" ]] || die "[$db] /v1/stats counts ${stored:-no} calls, not $CALLS"

  # A cursor in the middle of the calls, an agent's id.
  local mid agent_id
  mid=$(printf 'call_%026d' $((CALLS / 2)))
  agent_id=$(curl -fsS "${auth[@]}" "$API/v1/agents/agent3" | grep -o '"id":"agt_[^"]*"' | head -n1 | cut -d'"' -f4)
  [[ -n $agent_id ]] || die "GET /v1/agents/agent3 gave no id"
  local routes=(
    "/v1/calls?limit=50"
    "/v1/calls?limit=50&after=$mid"
    "/v1/calls?limit=50&status=completed&agent=agent3"
    "/v1/calls?limit=50&agent=$agent_id&after=$mid"
    "/v1/calls?limit=50&status=busy&since=2025-12-10T00:00:00Z&until=2025-12-20T00:00:00Z"
    "/v1/calls?limit=50&from=agent5"
    "/v1/cdrs?limit=50"
    "/v1/agents?limit=50"
    "/v1/api-keys?limit=50"
    "/v1/trunks?limit=50"
    "/v1/numbers?limit=50"
    "/v1/webhooks?limit=50"
  )
  local route out rps p50 p99 non2xx errors
  for route in "${routes[@]}"; do
    curl -fsS -o /dev/null "${auth[@]}" "$API$route" || die "[$db] GET $route failed before the load"
    out=$(wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency -H "Authorization: Bearer $API_KEY" "$API$route" 2>&1) \
      || { echo "$out" >&2; die "wrk failed on $route"; }
    rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
    # wrk prints "50%  1.23ms" (us, ms or s): convert to ms.
    pct() { awk -v p="$1" '$1 == p { v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
      if (u == "us") v /= 1000; else if (u == "s") v *= 1000; else if (u == "m") v *= 60000; printf "%.2f", v }' <<<"$out"; }
    p50=$(pct 50%); p99=$(pct 99%)
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' <<<"$out"); non2xx=${non2xx:-0}
    errors=$(awk '/Socket errors:/ { gsub(/,/, ""); print $4 + $6 + $8 + $10 }' <<<"$out"); errors=${errors:-0}
    [[ -n $rps && -n $p99 ]] || { echo "$out" >&2; die "could not read wrk's output for $route"; }
    RESULTS+=("$db|$route|$rps|$p50|$p99|$non2xx|$errors")
    printf '  %-9s %-82s %9s req/s  p50 %7s ms  p99 %7s ms  non-2xx %s  socket errors %s\n' \
      "$db" "$route" "$rps" "$p50" "$p99" "$non2xx" "$errors" >&2
  done
  stop_voxgate
  ((KEEP)) || drop_pg
}

log "voxgate $BUILD_LABEL, $CALLS calls, wrk -t$THREADS -c$CONNS -d${DURATION}s per route"
for db in "${DBS[@]}"; do run_db "$db"; done

# ---- report -------------------------------------------------------------------------
echo "list_load: voxgate $BUILD_LABEL, $CALLS stored calls, wrk $THREADS threads, $CONNS connections, ${DURATION} s per route"
printf '  %-9s %-82s %10s %9s %9s %8s\n' database route 'req/s' 'p50 ms' 'p99 ms' 'errors'
fail=0
for r in "${RESULTS[@]}"; do
  IFS='|' read -r db route rps p50 p99 non2xx errors <<<"$r"
  printf '  %-9s %-82s %10s %9s %9s %8s\n' "$db" "$route" "$rps" "$p50" "$p99" "$((non2xx + errors))"
  ((non2xx + errors == 0)) || { log "$db $route: $non2xx non-2xx responses, $errors socket errors"; fail=1; }
  if ((MIN_RPS > 0)) && awk -v a="$rps" -v b="$MIN_RPS" 'BEGIN { exit !(a < b) }'; then
    log "$db $route: $rps req/s is below --min-rps $MIN_RPS"; fail=1
  fi
  if ((MAX_P99 > 0)) && awk -v a="$p99" -v b="$MAX_P99" 'BEGIN { exit !(a > b) }'; then
    log "$db $route: p99 $p99 ms is above --max-p99 $MAX_P99"; fail=1
  fi
done
((fail == 0)) || die "some routes failed (see above)"
((SMOKE)) && log "smoke run OK"
exit 0
