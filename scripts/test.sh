#!/usr/bin/env bash
# Run the test suite once per Keras backend (KERAS_BACKEND is read once per
# process) and fail if any backend fails. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null || { echo "setup failed"; exit 1; }
export TF_CPP_MIN_LOG_LEVEL=3
.venv/bin/ruff check keras_towers tests guides benchmarks scripts || exit 1
# The embedded corpus and evaluation sets (offline; idempotent, ~1 s when built).
.venv/bin/keras-towers data prepare >/dev/null || { echo "data prepare failed"; exit 1; }
# Each pass runs every test of its backend, `slow`-marked ones included (a
# separate slow step per backend paid pytest's collection, which imports
# every test module, three more times). The three per-backend passes run one
# after the other; KERAS_TOWERS_TEST_JOBS=2 runs two at a time (for machines
# with more cores). On 2 cores it gains nothing although a pass alone keeps
# only about one core busy on average (tensorflow 0.96, jax 1.2, torch 1.1,
# measured 2026-12-01): run together, the jax and tensorflow passes each ran
# at half their speed alone (38% of the tests after 16.5 min, against 8.5
# min alone), on an Intel Xeon whose two CPUs ran two pure-Python loops
# 1.8x as fast as one after the other (and with one thread per pass,
# tests/test_clip.py took 327 s on jax and 436 s on tensorflow side by side,
# against 89 s and 181 s alone with two). Each pass writes its own log and
# pytest temp dir; with 2 jobs the logs are printed in order once every
# pass has ended.
jobs=${KERAS_TOWERS_TEST_JOBS:-1}
logs=$(mktemp -d)
run_backend() {
  if [ "$jobs" -le 1 ]; then
    echo "=== KERAS_BACKEND=$1 ==="  # streamed as it runs
    KERAS_BACKEND=$1 .venv/bin/python -m pytest -q -m "not packaging" \
      -p no:cacheprovider --basetemp="$logs/tmp-$1" "${@:2}"
  else
    KERAS_BACKEND=$1 .venv/bin/python -m pytest -q -m "not packaging" \
      -p no:cacheprovider --basetemp="$logs/tmp-$1" "${@:2}" >"$logs/$1.log" 2>&1
  fi
  echo $? >"$logs/$1.rc"
}
running=0
for backend in jax tensorflow torch; do
  if [ "$running" -ge "$jobs" ]; then
    wait -n
    running=$((running - 1))
  fi
  run_backend "$backend" "$@" &
  running=$((running + 1))
done
wait
passed=0
failed=0
for backend in jax torch tensorflow; do
  if [ -f "$logs/$backend.log" ]; then
    echo "=== KERAS_BACKEND=$backend ==="
    cat "$logs/$backend.log"
  fi
  if [ "$(cat "$logs/$backend.rc" 2>/dev/null)" = "0" ]; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "backend $backend FAILED"
  fi
done
rm -rf "$logs"
echo "backends: $passed passed, $failed failed"
# Packaging (build the wheel, install it into a fresh venv, load a shipped
# preset from it): backend-independent, so one run, not one per backend.
echo "=== packaging tests ==="
.venv/bin/python -m pytest -q -m packaging "$@"
rc=$?
packaging_failed=0
# 5: no packaging test collected, which is not a failure.
if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then
  packaging_failed=1
  echo "packaging tests FAILED"
fi
[ "$failed" -eq 0 ] && [ "$packaging_failed" -eq 0 ]
