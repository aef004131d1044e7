#!/usr/bin/env bash
# Fuzzes the filter's core with cargo-fuzz (libFuzzer, nightly toolchain), bounded in time:
# each target in fuzz/fuzz_targets/ runs FUZZ_SECONDS (default 60) on one core. Not part of
# scripts/test.sh (the property tests in tests/properties.rs are, and share the judge).
#
#   scripts/fuzz.sh                  # decide, config, replies: 60 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh decide
#
# The corpus grows in fuzz/corpus/<target>/ and a crash is saved in fuzz/artifacts/<target>/
# (both gitignored); reproduce one with `cargo +nightly fuzz run -O <target> <file>`.
# Exit status: 0 when no target found anything, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-60}"
if [ "$#" -gt 0 ]; then targets=("$@"); else targets=(decide config replies); fi

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz.sh: the nightly toolchain is missing: rustup toolchain install nightly" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz from crates.io"
  cargo install cargo-fuzz --locked
fi

for t in "${targets[@]}"; do
  cargo +nightly fuzz build -O "$t"
done

failed=0
summary=()
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  log="fuzz/artifacts/$t/last-run.log"
  echo "fuzz.sh: $t for ${seconds}s (log: $log)"
  if cargo +nightly fuzz run -O "$t" "fuzz/corpus/$t" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    result="no crash, no judge violation"
  else
    result="FAILED (see $log and fuzz/artifacts/$t/)"
    failed=1
    grep -m1 -A4 "panicked at" "$log" || tail -n 20 "$log"
  fi
  runs="$(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1 | grep -Eo '[0-9]+ runs in [0-9]+' || true)"
  cov="$(grep -E '#[0-9]+\s+DONE' "$log" | grep -Eo 'cov: [0-9]+' | tail -1 || true)"
  corpus="$(find "fuzz/corpus/$t" -type f | wc -l)"
  summary+=("$t: ${runs:-?} s, ${cov:-cov: ?}, corpus $corpus inputs: $result")
done

echo
echo "fuzz.sh summary ($(date -u +%Y-%m-%dT%H:%MZ), ${seconds}s per target):"
printf '  %s\n' "${summary[@]}"
exit "$failed"
