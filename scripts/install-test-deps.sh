#!/usr/bin/env bash
# Installs what the test suite and the benchmark smoke runs need, when it is missing,
# and makes sure PostgreSQL is up on 127.0.0.1:5432. Loud failure on anything it
# cannot do: a test that silently lacks its peer is worse than a red run.
set -euo pipefail

log() { printf 'install-test-deps: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# command -> Debian package that provides it
declare -A NEED=(
  [sipp]=sip-tester
  [rtpengine]=rtpengine-daemon
  [curl]=curl
  [ss]=iproute2
  [pg_isready]=postgresql-client
  [pg_ctlcluster]=postgresql-common
  # tests/audio.rs: two real softphones, speech synthesis, audio conversion
  [baresip]=baresip
  [espeak-ng]=espeak-ng
  [sox]=sox
  # tests/tls.rs: certificates made in the test, openssl s_server as a TLS peer
  [openssl]=openssl
  # tests/dns.rs: a local DNS server serving SRV and A records on a loopback port
  [dnsmasq]=dnsmasq-base
  # benches/list_load.sh: HTTP load (wrk) and seeding calls into SQLite (sqlite3);
  # scripts/schemathesis.sh: python3 with pip (schemathesis is installed from PyPI there)
  [wrk]=wrk
  [sqlite3]=sqlite3
  [python3]=python3
  # media/src/codec/opus.rs: libopus' reference decoder checks our Opus packets
  [opusdec]=opus-tools
  # tests/prompts.rs: an MP3 made by a real encoder (sox here has no MP3 writer)
  [lame]=lame
)

missing=()
for cmd in "${!NEED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEED[$cmd]}")
done
# The server itself (pg_ctlcluster needs a cluster under /etc/postgresql).
if ! compgen -G '/etc/postgresql/*/main' >/dev/null; then
  missing+=(postgresql)
fi

if ((${#missing[@]})); then
  command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
  if [[ $(id -u) -ne 0 ]]; then
    SUDO=sudo
    command -v sudo >/dev/null 2>&1 || die "missing ${missing[*]}; need root or sudo to install"
  else
    SUDO=
  fi
  log "installing: ${missing[*]}"
  $SUDO apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    || die "apt-get install ${missing[*]} failed"
fi

for cmd in "${!NEED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || die "$cmd still missing after install"
done

# SIPp: the scenarios are written against 3.6.x; say which one we have.
sipp_version=$(sipp -v 2>&1 | grep -o 'SIPp v[0-9.]*' | head -n1 || true)
[[ -n $sipp_version ]] || die "sipp -v did not report a version"
log "using $sipp_version"

# baresip: tests/common/baresip.rs loads these modules (all in baresip-core on Debian
# 12); a missing one is a loud failure here rather than a softphone that cannot answer.
baresip_modules=/usr/lib/baresip/modules
for m in g711 aufile aubridge sndfile account menu ctrl_tcp; do
  [[ -f $baresip_modules/$m.so ]] || die "baresip module $baresip_modules/$m.so missing"
done
baresip_version=$(baresip -h 2>&1 | grep -o 'baresip v[0-9.]*' | head -n1 || true)
[[ -n $baresip_version ]] || die "baresip -h did not report a version"
log "using $baresip_version"

# PostgreSQL on 127.0.0.1:5432 (the tests that exercise postgres:// connect there).
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  # shellcheck disable=SC2012 # plain version directory names
  version=$(ls /etc/postgresql | sort -V | tail -n1)
  [[ -n $version ]] || die "no PostgreSQL cluster under /etc/postgresql"
  log "starting PostgreSQL $version/main"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start \
    || die "pg_ctlcluster $version main start failed"
  for _ in $(seq 1 60); do
    pg_isready -q -h 127.0.0.1 -p 5432 && break
    sleep 0.5
  done
  pg_isready -h 127.0.0.1 -p 5432 || die "PostgreSQL not ready on 127.0.0.1:5432 after 30 s"
fi
log "PostgreSQL ready on 127.0.0.1:5432"

# tests/db_outage.rs runs a PostgreSQL server of its own (initdb + pg_ctl from the
# `postgresql` package, as the postgres user when run as root).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null \
  || die "no initdb under /usr/lib/postgresql/*/bin (package postgresql)"
compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null \
  || die "no pg_ctl under /usr/lib/postgresql/*/bin (package postgresql)"
if [[ $(id -u) -eq 0 ]]; then
  id postgres >/dev/null 2>&1 || die "no postgres user to run the test's own PostgreSQL as"
  command -v runuser >/dev/null 2>&1 || die "runuser missing (package util-linux)"
fi
