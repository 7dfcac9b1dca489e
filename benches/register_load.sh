#!/usr/bin/env bash
# Registration load against the real voxgate binary: N agents with digest auth,
# registered by SIPp at a target rate; reports achieved rate, failures,
# retransmissions and voxgate's own CPU per registration. See benches/README.md.
#
#   benches/register_load.sh [--rate R] [--total T] [--users N] [--procs P]
#                            [--transport u1|t1] [--profile release|dev] [--bin PATH] [--keep]
#   benches/register_load.sh --smoke     # a few hundred registrations, debug build, strict
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

RATE=200 TOTAL=20000 USERS=1000 PROCS=1 TRANSPORT=u1 PROFILE=release KEEP=0 SMOKE=0 BIN=
usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while (($#)); do
  case $1 in
    --rate) RATE=$2; shift 2 ;;
    --total) TOTAL=$2; shift 2 ;;
    --users) USERS=$2; shift 2 ;;
    --procs) PROCS=$2; shift 2 ;;
    --transport) TRANSPORT=$2; shift 2 ;;
    --profile) PROFILE=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --smoke) SMOKE=1 RATE=50 TOTAL=300 USERS=100 PROCS=2 PROFILE=dev; shift ;;
    -h|--help) usage 0 ;;
    *) echo "register_load: unknown argument $1" >&2; usage 2 ;;
  esac
done
for v in RATE TOTAL USERS PROCS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "register_load: --${v,,} must be a positive integer" >&2; exit 2; }
done
[[ $TRANSPORT == u1 || $TRANSPORT == t1 ]] || { echo "register_load: --transport u1|t1" >&2; exit 2; }
[[ $PROFILE == release || $PROFILE == dev ]] || { echo "register_load: --profile release|dev" >&2; exit 2; }
((PROCS <= 8)) || { echo "register_load: at most 8 SIPp processes (127.0.0.1-8)" >&2; exit 2; }
((USERS >= PROCS)) || { echo "register_load: need at least one user per SIPp process" >&2; exit 2; }

log() { printf 'register_load: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
for cmd in sipp curl ss awk; do
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
BUILD_LABEL="$PROFILE build"
[[ $BIN == */target*/* ]] || BUILD_LABEL="binary $BIN"

# ---- workspace and cleanup ----------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/voxgate-register-load.XXXXXX")
VOX_PID= SIPP_PIDS=()
cleanup() {
  local rc=$?
  for p in "${SIPP_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [[ -n $VOX_PID ]] && kill -0 "$VOX_PID" 2>/dev/null; then
    kill -TERM "$VOX_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$VOX_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$VOX_PID" 2>/dev/null || true
  fi
  if ((KEEP)) || ((rc != 0)); then
    log "files kept in $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

# A port free for both UDP and TCP on loopback (SIP uses one number for both).
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 40000))
    if [[ -z $(ss -Htuan "( sport = :$p )" 2>/dev/null) ]]; then echo "$p"; return 0; fi
  done
  die "no free port found"
}
SIP_PORT=$(free_port)
API_PORT=$(free_port)
[[ $SIP_PORT != "$API_PORT" ]] || API_PORT=$(free_port)
API_KEY="vxbench_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
API="http://127.0.0.1:$API_PORT"

# ---- start voxgate ------------------------------------------------------------------
log "starting $BIN (SIP 127.0.0.1:$SIP_PORT, API $API, data $WORK/data)"
mkdir -p "$WORK/data"
env VOXGATE_DATA_DIR="$WORK/data" \
  VOXGATE_DATABASE_URL="sqlite://$WORK/data/voxgate.db" \
  VOXGATE_SIP_LISTEN_UDP="127.0.0.1:$SIP_PORT" \
  VOXGATE_SIP_LISTEN_TCP="127.0.0.1:$SIP_PORT" \
  VOXGATE_SIP_PUBLIC_ADDR=127.0.0.1 \
  VOXGATE_SIP_SOURCE_RATE_LIMIT=0 \
  VOXGATE_API_LISTEN="127.0.0.1:$API_PORT" \
  VOXGATE_API_KEY="$API_KEY" \
  VOXGATE_LOG="${VOXGATE_LOG:-warn}" \
  "$BIN" serve >"$WORK/voxgate.log" 2>&1 &
VOX_PID=$!
# voxgate's default MD5 challenge is what SIPp 3.6.1 answers (tests/sipp/README.md);
# the source rate limit would throttle the load.

for _ in $(seq 1 300); do
  kill -0 "$VOX_PID" 2>/dev/null || { cat "$WORK/voxgate.log" >&2; die "voxgate exited during start"; }
  curl -fsS -o /dev/null "$API/readyz" 2>/dev/null && break
  sleep 0.1
done
curl -fsS -o /dev/null "$API/readyz" || { tail -n 50 "$WORK/voxgate.log" >&2; die "voxgate not ready after 30 s"; }

# ---- agents and injection files -----------------------------------------------------
log "creating $USERS agents"
create_agent() { # $1 = index
  local u p
  printf -v u 'load%05d' "$1"
  p="benchpass-$1-x"
  curl -fsS -o /dev/null -X POST "$API/v1/agents" \
    -H "Authorization: Bearer $API_KEY" -H 'Content-Type: application/json' \
    --data "{\"username\":\"$u\",\"password\":\"$p\"}" \
    || { echo "POST /v1/agents $u failed" >&2; return 1; }
}
export -f create_agent
export API API_KEY
seq 1 "$USERS" | xargs -P 4 -I{} bash -c 'create_agent {}' \
  || die "creating agents failed"

# One injection file per SIPp process, users split between them so no two processes
# register the same agent. SIPp reads SEQUENTIAL files round-robin, so TOTAL > USERS
# re-registers (refreshes) agents.
for ((i = 0; i < PROCS; i++)); do
  {
    echo SEQUENTIAL
    for ((n = i + 1; n <= USERS; n += PROCS)); do
      printf 'load%05d;[authentication username=load%05d password=benchpass-%d-x]\n' "$n" "$n" "$n"
    done
  } >"$WORK/users_$i.csv"
done

# ---- run ----------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$VOX_PID/stat"; } # utime + stime, all threads
now() { date +%s.%N; }

per_rate=$(( (RATE + PROCS - 1) / PROCS ))
per_total=$(( (TOTAL + PROCS - 1) / PROCS ))
timeout_s=$(( per_total / per_rate + 60 ))
log "SIPp x$PROCS ($TRANSPORT): $per_rate reg/s each, $per_total each, timeout ${timeout_s}s"

cpu0=$(cpu_ticks); t0=$(now)
for ((i = 0; i < PROCS; i++)); do
  # From $WORK, so any file SIPp names by itself lands there, not in the repo.
  (cd "$WORK" && exec sipp -sf "$ROOT/tests/sipp/register_load.xml" "127.0.0.1:$SIP_PORT" \
    -t "$TRANSPORT" -i "127.0.0.$((i + 1))" -p "$(free_port)" -auth_uri 127.0.0.1 \
    -inf "$WORK/users_$i.csv" -r "$per_rate" -rp 1000 -m "$per_total" -l $((per_rate * 10)) \
    -nostdin -default_behaviors all,-bye -timeout "${timeout_s}s" -timeout_error \
    -trace_stat -stf "$WORK/stat_$i.csv" -fd 1 \
    -trace_err -error_file "$WORK/errors_$i.log" \
    -trace_screen -screen_file "$WORK/screen_$i.txt" \
    >"$WORK/sipp_$i.out" 2>&1) &
  SIPP_PIDS+=($!)
done
sipp_rcs=()
for p in "${SIPP_PIDS[@]}"; do
  rc=0; wait "$p" || rc=$?
  sipp_rcs+=("$rc")
done
SIPP_PIDS=()
t1=$(now); cpu1=$(cpu_ticks)
kill -0 "$VOX_PID" 2>/dev/null || { tail -n 50 "$WORK/voxgate.log" >&2; die "voxgate died during the run"; }

# ---- report -------------------------------------------------------------------------
# Last line of SIPp's -trace_stat CSV, cumulative columns by name.
stat() { # $1 = file, $2 = column name
  awk -F';' -v col="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
    { last = $c } END { if (c) print last; else print "NA" }' "$1"
}
ok=0 failed=0 retrans=0 rt_sum=0
for ((i = 0; i < PROCS; i++)); do
  f="$WORK/stat_$i.csv"
  [[ -s $f ]] || { cat "$WORK/sipp_$i.out" >&2; die "SIPp $i wrote no statistics (exit ${sipp_rcs[$i]})"; }
  s=$(stat "$f" 'SuccessfulCall(C)'); x=$(stat "$f" 'FailedCall(C)'); r=$(stat "$f" 'Retransmissions(C)')
  rt=$(stat "$f" 'ResponseTime1(C)') # hh:mm:ss:usec, mean over the run
  ok=$((ok + s)); failed=$((failed + x)); retrans=$((retrans + r))
  rt_us=$(awk -F: '{ printf "%d", (($1 * 60 + $2) * 60 + $3) * 1000000 + $4 }' <<<"$rt")
  rt_sum=$((rt_sum + rt_us * s))
done

# Latency histogram: SIPp's ResponseTimeRepartition1_* columns (ms), summed over processes.
hist=$(for ((i = 0; i < PROCS; i++)); do
  awk -F';' 'NR == 1 { for (i = 1; i <= NF; i++) if ($i ~ /^ResponseTimeRepartition1_/) { n++; c[n] = i; h[n] = substr($i, 26) }; next }
    { for (k = 1; k <= n; k++) v[k] = $c[k] } END { for (k = 1; k <= n; k++) print k, h[k], v[k] }' "$WORK/stat_$i.csv"
done | awk '{ name[$1] = $2; sum[$1] += $3; if ($1 > n) n = $1 }
  END { for (k = 1; k <= n; k++) printf "%s%sms:%d", (k > 1 ? " " : ""), name[k], sum[k] }')

wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
cpu_s=$(awk -v a="$cpu0" -v b="$cpu1" -v t="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / t }')
awk -v rate="$RATE" -v total="$TOTAL" -v ok="$ok" -v failed="$failed" -v retrans="$retrans" \
  -v wall="$wall" -v cpu="$cpu_s" -v rtsum="$rt_sum" -v users="$USERS" -v procs="$PROCS" \
  -v transport="$TRANSPORT" -v profile="$BUILD_LABEL" -v hist="$hist" 'BEGIN {
  printf "register_load: voxgate %s, %d agents, %d SIPp process(es), transport %s\n", profile, users, procs, transport
  printf "  target rate           %d reg/s, %d registrations\n", rate, total
  printf "  successful            %d (%.1f reg/s over %.1f s)\n", ok, ok / wall, wall
  printf "  failed                %d\n", failed
  printf "  retransmissions       %d\n", retrans
  printf "  mean registration     %.0f ms (first REGISTER sent -> 200 OK; SIPp counts whole ms)\n", (ok ? rtsum / ok / 1000 : 0)
  printf "  latency histogram     %s\n", hist
  printf "  voxgate CPU           %.2f s = %.1f%% of one core, %.0f us per registration\n", cpu, 100 * cpu / wall, (ok ? cpu * 1e6 / ok : 0)
}'

for ((i = 0; i < PROCS; i++)); do
  if ((sipp_rcs[i] != 0)); then
    log "SIPp $i exited ${sipp_rcs[$i]}; first errors:"
    head -c 2000 "$WORK/errors_$i.log" >&2 2>/dev/null || true
  fi
done
((ok > 0)) || die "no registration succeeded"
if ((SMOKE)); then
  # The smoke run checks that the benchmark still works end to end: all must pass.
  ((failed == 0 && ok >= TOTAL)) || die "smoke run: $failed failed, $ok of $TOTAL succeeded"
  log "smoke run OK"
fi
