# Adapter: restic 0.18.1 (go install github.com/restic/restic/cmd/restic@v0.18.1),
# for comparing with the newest restic beside Debian's 0.14:
#   RESTIC018=/path/to/restic ../shared/bench/run.sh -n 3 restic bench/restic-0.18.sh borg copy bench/coffre.sh
RESTIC=${RESTIC018:-$(go env GOPATH)/bin/restic}
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$STATE/restic018-cache
tool_version() { $RESTIC version; }
tool_init()    { $RESTIC -r "$1" init; }
tool_backup()  { $RESTIC -r "$1" backup "$2"; }
tool_restore() { $RESTIC -r "$1" restore latest --target "$2"; }
tool_check()   { $RESTIC -r "$1" check --read-data; }
tool_reset()   { rm -rf "$STATE/restic018-cache"; }
