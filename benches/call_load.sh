#!/usr/bin/env bash
# Call load against the real voxgate binary: N agent pairs, each caller a SIPp UAC at its
# share of the offered rate (INVITE -> 407 -> INVITE with digest -> 200 -> ACK -> talk ->
# BYE), each callee a SIPp UAS that registered from its port and answers at once; no media.
# Reports completed / refused / failed calls, achieved calls/s, set-up p50/p99, voxgate's
# CPU per call and peak RSS. See benches/README.md.
#
#   benches/call_load.sh [--rate R] [--duration S] [--pairs N] [--talk MS] [--max-cps C]
#                        [--queue-delay MS] [--profile release|dev] [--bin PATH] [--keep]
#                        [--database-url URL]   # default: SQLite in the run's temp dir
#   benches/call_load.sh --smoke     # 100 calls at 20/s over 2 pairs, debug build, strict
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

RATE=200 DURATION=20 PAIRS=10 TALK=100 MAX_CPS=0 QUEUE_DELAY= PROFILE=release KEEP=0 SMOKE=0 BIN= DB_URL=
usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while (($#)); do
  case $1 in
    --rate) RATE=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --pairs) PAIRS=$2; shift 2 ;;
    --talk) TALK=$2; shift 2 ;;
    --max-cps) MAX_CPS=$2; shift 2 ;;
    --queue-delay) QUEUE_DELAY=$2; shift 2 ;;
    --profile) PROFILE=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --database-url) DB_URL=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --smoke) SMOKE=1 RATE=20 DURATION=5 PAIRS=2 TALK=100 PROFILE=dev; shift ;;
    -h|--help) usage 0 ;;
    *) echo "call_load: unknown argument $1" >&2; usage 2 ;;
  esac
done
for v in RATE DURATION PAIRS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "call_load: --${v,,} must be a positive integer" >&2; exit 2; }
done
[[ $TALK =~ ^[0-9]+$ ]] || { echo "call_load: --talk must be milliseconds" >&2; exit 2; }
[[ $MAX_CPS =~ ^[0-9]+$ ]] || { echo "call_load: --max-cps must be a number (0 = no limit)" >&2; exit 2; }
[[ -z $QUEUE_DELAY || $QUEUE_DELAY =~ ^[0-9]+$ ]] || { echo "call_load: --queue-delay must be milliseconds (0 = off)" >&2; exit 2; }
[[ $PROFILE == release || $PROFILE == dev ]] || { echo "call_load: --profile release|dev" >&2; exit 2; }
((PAIRS <= 100)) || { echo "call_load: at most 100 pairs (two SIPp processes each)" >&2; exit 2; }

log() { printf 'call_load: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
for cmd in sipp curl ss awk sort; do
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
[[ $BIN == */release/* ]] && BUILD_LABEL="release build"
[[ $BIN == */debug/* ]] && BUILD_LABEL="debug build"

# ---- workspace and cleanup ----------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/voxgate-call-load.XXXXXX")
VOX_PID= PIDS=()
cleanup() {
  local rc=$?
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
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

# A port free for both UDP and TCP on loopback, not handed out before in this run.
declare -A TAKEN=()
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$((35000 + RANDOM % 25000))
    [[ -n ${TAKEN[$p]:-} ]] && continue
    if [[ -z $(ss -Htuan "( sport = :$p )" 2>/dev/null) ]]; then TAKEN[$p]=1; echo "$p"; return 0; fi
  done
  die "no free port found"
}
SIP_PORT=$(free_port); TAKEN[$SIP_PORT]=1
API_PORT=$(free_port); TAKEN[$API_PORT]=1
API_KEY="vxbench_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
API="http://127.0.0.1:$API_PORT"

# ---- start voxgate ------------------------------------------------------------------
log "starting $BIN (SIP 127.0.0.1:$SIP_PORT, API $API, data $WORK/data)"
mkdir -p "$WORK/data"
extra=()
((MAX_CPS > 0)) && extra+=("VOXGATE_SIP_MAX_CPS=$MAX_CPS")
[[ -n $QUEUE_DELAY ]] && extra+=("VOXGATE_SIP_OVERLOAD_QUEUE_DELAY_MS=$QUEUE_DELAY")
# voxgate runs on its default config (log level, per-source rate limit included): each
# pair's caller and callee get their own loopback address (127.0.1.N, 127.0.2.N), as
# phones on a LAN have, so no source exceeds sip.source_rate_limit. Only the RTP range is
# wider than the default: a call holds two RTP port pairs, 10,000 ports hold 2,500 calls.
env VOXGATE_DATA_DIR="$WORK/data" \
  VOXGATE_DATABASE_URL="${DB_URL:-sqlite://$WORK/data/voxgate.db}" \
  VOXGATE_SIP_LISTEN_UDP="127.0.0.1:$SIP_PORT" \
  VOXGATE_SIP_LISTEN_TCP="127.0.0.1:$SIP_PORT" \
  VOXGATE_SIP_PUBLIC_ADDR=127.0.0.1 \
  VOXGATE_RTP_PORTS=20000-29999 \
  VOXGATE_API_LISTEN="127.0.0.1:$API_PORT" \
  VOXGATE_API_KEY="$API_KEY" \
  "${extra[@]}" \
  "$BIN" serve >"$WORK/voxgate.log" 2>&1 &
VOX_PID=$!

for _ in $(seq 1 300); do
  kill -0 "$VOX_PID" 2>/dev/null || { cat "$WORK/voxgate.log" >&2; die "voxgate exited during start"; }
  curl -fsS -o /dev/null "$API/readyz" 2>/dev/null && break
  sleep 0.1
done
curl -fsS -o /dev/null "$API/readyz" || { tail -n 50 "$WORK/voxgate.log" >&2; die "voxgate not ready after 30 s"; }

# ---- agents, registrations, answering phones ----------------------------------------
log "creating $PAIRS agent pairs"
create_agent() { # $1 = username
  curl -fsS -o /dev/null -X POST "$API/v1/agents" \
    -H "Authorization: Bearer $API_KEY" -H 'Content-Type: application/json' \
    --data "{\"username\":\"$1\",\"password\":\"$1-secret-1\",\"max_concurrent_calls\":100}" \
    || die "POST /v1/agents $1 failed"
}
CALLEE_PORTS=() CALLER_PORTS=() CALLEE_IPS=() CALLER_IPS=()
for ((i = 0; i < PAIRS; i++)); do
  create_agent "benchcaller$i"
  create_agent "benchcallee$i"
  CALLEE_PORTS+=("$(free_port)")
  CALLER_PORTS+=("$(free_port)")
  CALLEE_IPS+=("127.0.2.$((i + 1))")
  CALLER_IPS+=("127.0.1.$((i + 1))")
done

# SIPp runs from $WORK, so any file it names by itself lands there, not in the repo. Each
# SIPp gets its own media port base (-mp, two ports used, 30000-33999): by default SIPp
# tries 100 even ports from 6000, which many processes (and other tests' SIPps) exhaust
# ("Unable to bind audio RTP socket"). SIP and API ports are picked from 35000 up.
log "registering $PAIRS callees and starting their phones"
for ((i = 0; i < PAIRS; i++)); do
  u="benchcallee$i" p=${CALLEE_PORTS[$i]} ip=${CALLEE_IPS[$i]}
  (cd "$WORK" && sipp -sf "$ROOT/tests/sipp/register.xml" "127.0.0.1:$SIP_PORT" -t u1 \
    -i "$ip" -p "$p" -s "$u" -au "$u" -ap "$u-secret-1" -auth_uri 127.0.0.1 \
    -set contact "<sip:$u@$ip:$p;transport=udp>" -set hdr "Expires: 3600" \
    -m 1 -nostdin -timeout 10s -timeout_error >"$WORK/register_$i.out" 2>&1) \
    || { cat "$WORK/register_$i.out" >&2; die "registering $u failed"; }
  (cd "$WORK" && exec sipp -sf "$ROOT/tests/sipp/call_load_uas.xml" "127.0.0.1:$SIP_PORT" -t u1 \
    -i "$ip" -p "$p" -s "$u" -set rtp 9 -l 5000 -mp $((30000 + 40 * i)) -nostdin \
    -trace_err -error_file "$WORK/uas_errors_$i.log" >"$WORK/uas_$i.out" 2>&1) &
  PIDS+=($!)
done
for ((i = 0; i < PAIRS; i++)); do # wait until each phone has bound its port
  for _ in $(seq 1 100); do
    [[ -n $(ss -Huan "( sport = :${CALLEE_PORTS[$i]} )" 2>/dev/null) ]] && break
    sleep 0.05
  done
done

# ---- run ----------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$VOX_PID/stat"; } # utime + stime, all threads
now() { date +%s.%N; }
TOTAL=$((RATE * DURATION))
per_calls=$(( (TOTAL + PAIRS - 1) / PAIRS ))
per_rate=$(awk -v r="$RATE" -v n="$PAIRS" 'BEGIN { printf "%.3f", r / n }')
timeout_s=$((DURATION + 60))
log "offering $RATE calls/s for $DURATION s over $PAIRS pairs ($per_rate calls/s, $per_calls calls each; talk $TALK ms)"

UACS=()
cpu0=$(cpu_ticks); t0=$(now)
for ((i = 0; i < PAIRS; i++)); do
  mkdir -p "$WORK/uac_$i"
  (cd "$WORK/uac_$i" && exec sipp -sf "$ROOT/tests/sipp/call_load_uac.xml" "127.0.0.1:$SIP_PORT" -t u1 \
    -i "${CALLER_IPS[$i]}" -p "${CALLER_PORTS[$i]}" -s "benchcallee$i" \
    -au "benchcaller$i" -ap "benchcaller$i-secret-1" -auth_uri "benchcallee$i@127.0.0.1" \
    -set caller "benchcaller$i" -set rtp 9 \
    -r "$per_rate" -rp 1000 -m "$per_calls" -l 5000 -d "$TALK" -mp $((30020 + 40 * i)) \
    -nostdin -default_behaviors all,-bye -timeout "${timeout_s}s" -timeout_error \
    -trace_stat -stf "$WORK/stat_$i.csv" -fd 1 \
    -trace_rtt -rtt_freq 1 \
    -trace_logs -log_file "$WORK/uac_$i.log" \
    -trace_err -error_file "$WORK/errors_$i.log" \
    >"$WORK/sipp_$i.out" 2>&1) &
  UACS+=($!)
done
sipp_rcs=()
for p in "${UACS[@]}"; do
  rc=0; wait "$p" || rc=$?
  sipp_rcs+=("$rc")
done
t1=$(now); cpu1=$(cpu_ticks)
kill -0 "$VOX_PID" 2>/dev/null || { tail -n 50 "$WORK/voxgate.log" >&2; die "voxgate died during the run"; }
peak_rss_kb=$(awk '/^VmHWM:/ { print $2 }' "/proc/$VOX_PID/status")

# What is left open once the run is over (gauges refreshed by a 1 s tick in the core).
metric() { # $1 = name; sum over label sets, empty when absent
  curl -fsS -H "Authorization: Bearer $API_KEY" "$API/metrics" 2>/dev/null \
    | awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $NF; f = 1 } END { if (f) print s }'
}
# Up to 40 s: a BYE to a phone that no longer answers ends its call when the BYE's
# transaction times out (Timer F, 64·T1 = 32 s, RFC 3261 §17.1.2.2).
left= drained=-1
for _ in $(seq 1 200); do
  left="$(metric voxgate_calls_active) $(metric voxgate_sip_dialogs) $(metric voxgate_rtp_ports_allocated)"
  if [[ $left == "0 0 0" ]]; then drained=$(awk -v a="$t1" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }'); break; fi
  sleep 0.2
done
rejected_cps=$(curl -fsS -H "Authorization: Bearer $API_KEY" "$API/metrics" | awk '/^voxgate_sip_overload_rejected_total\{reason="max_cps"\}/ { print $NF }')
rejected_delay=$(curl -fsS -H "Authorization: Bearer $API_KEY" "$API/metrics" | awk '/^voxgate_sip_overload_rejected_total\{reason="queue_delay"\}/ { print $NF }')

# ---- report -------------------------------------------------------------------------
stat() { # $1 = file, $2 = column name: last line of SIPp's -trace_stat CSV
  awk -F';' -v col="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
    { last = $c } END { if (c) print last; else print "NA" }' "$1"
}
completed=0 refused=0 late=0 failed=0 retrans=0
for ((i = 0; i < PAIRS; i++)); do
  f="$WORK/stat_$i.csv"
  [[ -s $f ]] || { cat "$WORK/sipp_$i.out" >&2; die "SIPp $i wrote no statistics (exit ${sipp_rcs[$i]})"; }
  completed=$((completed + $(grep -c '@@COMPLETED@@' "$WORK/uac_$i.log" || true)))
  refused=$((refused + $(grep -c '@@REFUSED@@' "$WORK/uac_$i.log" || true)))
  late=$((late + $(grep -c '@@BYE-LATE@@' "$WORK/uac_$i.log" || true)))
  failed=$((failed + $(stat "$f" 'FailedCall(C)')))
  retrans=$((retrans + $(stat "$f" 'Retransmissions(C)')))
done
# -trace_rtt: one line per measure, "date_ms;response_time_ms;rtd_no" (rtd 1 = set-up,
# 2 = BYE, 3 = refusal; see tests/sipp/call_load_uac.xml).
cat "$WORK"/uac_*/*_rtt.csv 2>/dev/null | awk -F';' '$3 ~ /^[0-9]/ { print > (dir "/rtd_" $3 ".txt") }' dir="$WORK"
pct() { # $1 = rtd number, $2 = percentile (0-100): nearest rank, ms
  local f="$WORK/rtd_$1.txt"
  [[ -s $f ]] || { echo "-"; return; }
  cut -d';' -f2 "$f" | sort -n | awk -v p="$2" '{ v[NR] = $1 } END { r = int(p / 100 * NR + 0.999); if (r < 1) r = 1; printf "%.0f", v[r] }'
}
wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
cpu_s=$(awk -v a="$cpu0" -v b="$cpu1" -v t="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / t }')
awk -v rate="$RATE" -v dur="$DURATION" -v pairs="$PAIRS" -v talk="$TALK" -v total="$TOTAL" \
  -v done="$completed" -v refused="$refused" -v failed="$failed" -v late="$late" -v retrans="$retrans" \
  -v wall="$wall" -v cpu="$cpu_s" -v rss="$peak_rss_kb" -v profile="$BUILD_LABEL" -v maxcps="$MAX_CPS" \
  -v qdelay="${QUEUE_DELAY:-default}" \
  -v s50="$(pct 1 50)" -v s99="$(pct 1 99)" -v b50="$(pct 2 50)" -v b99="$(pct 2 99)" \
  -v r50="$(pct 3 50)" -v r99="$(pct 3 99)" -v left="$left" -v drained="$drained" \
  -v rcps="${rejected_cps:-0}" -v rdelay="${rejected_delay:-0}" 'BEGIN {
  printf "call_load: voxgate %s, %d agent pairs, talk %d ms, sip.max_cps %s, overload_queue_delay_ms %s\n", profile, pairs, talk, (maxcps ? maxcps : "off"), qdelay
  printf "  offered               %d calls/s for %d s = %d calls\n", rate, dur, total
  printf "  completed             %d (%.1f calls/s over %.1f s)\n", done, done / wall, wall
  printf "  refused (503)         %d (voxgate: max_cps %d, queue_delay %d)\n", refused, rcps, rdelay
  printf "  failed                %d\n", failed
  printf "  SIPp retransmissions  %d\n", retrans
  printf "  set-up p50 / p99      %s / %s ms (first INVITE -> 200, 407 round trip included)\n", s50, s99
  printf "  BYE p50 / p99         %s / %s ms (%d later than 450 ms)\n", b50, b99, late
  printf "  503 p50 / p99         %s / %s ms\n", r50, r99
  printf "  voxgate CPU           %.2f s = %.1f%% of one core, %.2f ms per completed call\n", cpu, 100 * cpu / wall, (done ? cpu * 1000 / done : 0)
  printf "  voxgate peak RSS      %.1f MB (VmHWM)\n", rss / 1024
  split(left, a, " ")
  printf "  left open after run   calls %s, dialogs %s, RTP ports %s (%s)\n", a[1], a[2], a[3], (drained >= 0 ? "all 0 within " drained " s" : "after 40 s")
}'

shown=0
for ((i = 0; i < PAIRS; i++)); do
  if ((sipp_rcs[i] != 0)); then
    log "SIPp caller $i exited ${sipp_rcs[$i]} (errors in $WORK/errors_$i.log)"
    if ((!shown)); then # the first failing caller's first errors are usually enough
      head -c 1500 "$WORK/errors_$i.log" >&2 2>/dev/null || true
      echo >&2
      shown=1
    fi
  fi
done
for rc in "${sipp_rcs[@]}"; do
  ((rc < 254)) || die "a SIPp caller could not run (exit $rc): the figures above undercount the offer"
done
((completed > 0)) || die "no call completed"
[[ $left == "0 0 0" ]] || die "calls, dialogs or RTP ports left open after the run: $left"
if ((SMOKE)); then
  # The smoke run checks that the benchmark still works end to end: every call completes.
  ((failed == 0 && refused == 0 && completed >= TOTAL)) \
    || die "smoke run: $completed of $TOTAL completed, $refused refused, $failed failed"
  log "smoke run OK"
fi
