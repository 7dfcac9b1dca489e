#!/usr/bin/env bash
# RTP relay load harness: voxgate's relay shapes and rtpengine (the baseline) in one run.
# Installs Debian's rtpengine-daemon when missing (userspace forwarding only is used).
#
#   benches/relay_load.sh --smoke                      # a few seconds, for CI
#   benches/relay_load.sh --calls 200,400,800 --duration 60 --runs 3
#   benches/relay_load.sh --relay voxgate:edge,rtpengine --calls 400
#
# Sends only to 127.0.0.1; every run is bounded by --duration and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v rtpengine >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rtpengine-daemon
fi
# rtpengine's Debian service must not hold the ng port or RTP ports we use.
# The smoke run (CI) only checks that the harness and both relays still work: it builds
# the bench in the test profile, sharing the test build's dependencies, instead of a
# second, optimised build of the whole tree. Figures come from the real runs.
if [[ " $* " == *" --smoke "* ]]; then
    exec cargo test --bench relay_load -- "$@"
fi
exec cargo bench --bench relay_load -- "$@"
