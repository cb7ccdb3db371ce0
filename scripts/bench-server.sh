# Sourced by the scripts that run a paired device against a real dispatcher:
# starts the dispatch bench's own server (`--serve`) on 127.0.0.1:0 and mints
# a pairing code. Sets `addr`, `code` and `work` (a temporary folder), and an
# exit trap that stops the server and every background job and removes
# `work`.
cargo bench -q -p fusion-host-server --bench dispatch --no-run 2>/dev/null
server_bin=$(ls -t "${CARGO_TARGET_DIR:-target}"/release/deps/dispatch-* | grep -v '\.d$' | head -1)
work=$(mktemp -d)
# The server reads its stdin until it closes: a `sleep` holds it open, and
# the exit trap stops it with the jobs (its stderr is not the caller's, so a
# caller reading the script's output through a pipe sees it end).
exec 3< <(sleep 3600 2>/dev/null)
holder=$!
# A device stopping writes in its configuration folder: it is waited for.
trap 'kill $(jobs -p) "$holder" 2>/dev/null || true; wait 2>/dev/null; rm -rf "$work"' EXIT
mkfifo "$work/server.out"
"$server_bin" --serve <&3 > "$work/server.out" &
read -r line < "$work/server.out"
addr=${line#listening on http://}
[ "$addr" != "$line" ] || { echo "the bench server did not start: $line" >&2; exit 1; }
code=$(curl -s -X POST "http://$addr/bench/mint" | sed 's/.*"code":"\([^"]*\)".*/\1/')
mkdir -p "$work/scans" "$work/config"

# Waits until the device writing to $1 says it is connected (at most $2
# tenths of a second), else shows what it said and fails.
wait_connected() {
  for _ in $(seq "$2"); do grep -q "Connected" "$1" 2>/dev/null && return 0; sleep 0.1; done
  cat "$1" >&2
  return 1
}
