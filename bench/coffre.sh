# Adapter: coffre, for ../shared/bench/run.sh (sourced by compare.sh).
#   ../shared/bench/run.sh -n 3 restic borg copy bench/coffre.sh
# Builds bin/coffre from this checkout once per run (COFFRE=path to use another build).
_COFFRE_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COFFRE=${COFFRE:-$_COFFRE_HERE/bin/coffre}
if [ ! -x "$COFFRE" ] || [ -n "$(find "$_COFFRE_HERE/internal" "$_COFFRE_HERE/cmd" -newer "$COFFRE" -name '*.go' 2>/dev/null | head -1)" ]; then
  (cd "$_COFFRE_HERE" && go build -o bin/coffre ./cmd/coffre) >&2
fi
export COFFRE_PASSWORD=bench
tool_version() { "$COFFRE" --help | head -1; (cd "$_COFFRE_HERE" && git rev-parse --short HEAD 2>/dev/null); }
tool_init()    { "$COFFRE" --vault "$1" init; }
tool_backup()  { "$COFFRE" --vault "$1" backup "$2"; }
tool_restore() { "$COFFRE" --vault "$1" restore latest --target "$2"; }
tool_check()   { "$COFFRE" --vault "$1" check --read-data; }
tool_reset()   { :; }
