#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60): `fuzz/run.sh 15`.
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). On a stable toolchain the sanitizer
# flags are enabled with RUSTC_BOOTSTRAP=1. Fails if any target finds a crash, a hang
# (over 5 s for one input) or an allocation above 512 MB.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-/var/tmp/token-service-fuzz-target}"
targets=$(cargo fuzz list)
cargo fuzz build 2>&1 | tail -n 1
for target in $targets; do
  mkdir -p "corpus/$target"
  echo "fuzz: $target for ${seconds}s"
  cargo fuzz run "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=5 -rss_limit_mb=512 -malloc_limit_mb=512 \
    -max_len=70000 -print_final_stats=1 2>&1 | grep -E "^(stat::number_of_executed_units|==|SUMMARY|Done)" || true
  # cargo fuzz exits non-zero and leaves an artifact when it finds something.
  if compgen -G "artifacts/$target/*" >/dev/null; then
    echo "fuzz: $target found a failing input in fuzz/artifacts/$target" >&2
    exit 1
  fi
done
echo "fuzz: all targets clean"
