#!/usr/bin/env bash
# The whole test suite: installs and starts the services the tests need (on
# 127.0.0.1), runs gofmt, go vet and every Go test (with the race detector),
# then stops the services. Exits non-zero if anything fails.
#   scripts/test.sh            # everything
#   scripts/test.sh ./internal/repo/...   # only some packages (services still started)
set -euo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS=${GOFLAGS:--buildvcs=false}
export PATH=$PATH:/usr/local/go/bin:$(go env GOPATH)/bin

command -v go >/dev/null || { echo "test.sh: Go is required (https://go.dev/dl)" >&2; exit 1; }

envfile=$(mktemp)
cleanup() { scripts/services.sh stop >/dev/null 2>&1 || true; rm -f "$envfile"; }
trap cleanup EXIT
scripts/services.sh start "$envfile"
set -a; . "$envfile"; set +a
# With the services up, a test that finds one missing must fail, not skip.
export COFFRE_TEST_REQUIRE_SERVICES=1

echo "== gofmt"
bad=$(gofmt -l cmd internal)
if [ -n "$bad" ]; then echo "gofmt needed on:"; echo "$bad"; exit 1; fi
echo "== go vet"
go vet ./...
echo "== go test"
pkgs=("$@")
[ ${#pkgs[@]} -gt 0 ] || pkgs=(./...)
log=$(mktemp)
set +e
go test -race -count=1 -timeout 30m -v "${pkgs[@]}" >"$log" 2>&1
status=$?
set -e
# Package results and skips; on failure, also the failing tests' messages.
if [ "$status" -eq 0 ]; then
  grep -E '^(ok|FAIL|\s*--- SKIP)' "$log" || true
else
  grep -E '^(ok|FAIL|panic:|\s*--- FAIL|\s*--- SKIP|\s+[A-Za-z0-9_]+\.go:[0-9]+:|# |\[build failed\])' "$log" || true
fi
passed=$(grep -cE '^\s*--- PASS' "$log" || true)
failed=$(grep -cE '^\s*--- FAIL' "$log" || true)
skipped=$(grep -cE '^\s*--- SKIP' "$log" || true)
echo "full log: $log"
# A skipped test fails the run: a skipped backend is an untested backend.
if [ "$skipped" -gt 0 ]; then
  echo "test.sh: $skipped test(s) skipped; failing the run" >&2
  status=1
fi
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
echo "test.sh: $passed passed, $failed failed"
exit "$status"
