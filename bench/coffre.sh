# Adapter: coffre, for ../shared/bench/run.sh (sourced by compare.sh before every phase).
#   go build -o bin/coffre ./cmd/coffre && ../shared/bench/run.sh -n 3 restic borg copy bench/coffre.sh
# COFFRE=path selects another build. Nothing is built inside a timed phase:
# tool_init (untimed) builds bin/coffre only if it is missing.
_COFFRE_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COFFRE=${COFFRE:-$_COFFRE_HERE/bin/coffre}
export COFFRE_PASSWORD=bench
tool_version() { "$COFFRE" --help | head -1; (cd "$_COFFRE_HERE" && git rev-parse --short HEAD 2>/dev/null); }
tool_init()    { [ -x "$COFFRE" ] || (cd "$_COFFRE_HERE" && go build -o "$COFFRE" ./cmd/coffre) || return 1; "$COFFRE" --vault "$1" init; }
tool_backup()  { "$COFFRE" --vault "$1" backup "$2"; }
tool_restore() { "$COFFRE" --vault "$1" restore latest --target "$2"; }
tool_check()   { "$COFFRE" --vault "$1" check --read-data; }
tool_reset()   { :; }
