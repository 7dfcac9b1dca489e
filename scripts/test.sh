#!/usr/bin/env bash
# The project's test command (README, CI): dependencies, format, lints, every test,
# and a smoke run of the benchmark scripts. Fails on the first failing step.
#
#   scripts/test.sh            everything
#   SKIP_BENCH_SMOKE=1 ...     skip the benchmark smoke runs (local iteration only)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*" >&2; }
start=$SECONDS

step "test dependencies"
scripts/install-test-deps.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

if cargo nextest --version >/dev/null 2>&1; then
  step "cargo nextest run"
  # nextest runs each test in its own process, in parallel; it does not run doctests.
  cargo nextest run --workspace --locked --no-fail-fast --failure-output final
  step "cargo test --doc"
  cargo test --workspace --doc --locked
else
  step "cargo test (cargo-nextest not installed)"
  cargo test --workspace --all-targets --locked --no-fail-fast
  step "cargo test --doc"
  cargo test --workspace --doc --locked
fi

# The test build already produced the binary (integration tests run it); building it
# again with `cargo build` would unify features differently and recompile the world.
bin="${CARGO_TARGET_DIR:-target}/debug/voxgate"
[[ -x $bin ]] || { echo "test.sh: $bin missing after the test build" >&2; exit 1; }

step "schemathesis: the OpenAPI document against the running binary"
scripts/schemathesis.sh --bin "$bin"

if [[ ${SKIP_BENCH_SMOKE:-0} != 1 ]]; then
  step "benchmark smoke runs"
  benches/list_load.sh --smoke --bin "$bin"
  benches/register_load.sh --smoke --bin "$bin"
  benches/call_load.sh --smoke --bin "$bin"
  benches/relay_load.sh --smoke
fi

step "all green in $((SECONDS - start)) s"
