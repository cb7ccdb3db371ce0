#!/usr/bin/env bash
# Size and idle memory of the shipped `fusion-host` binary (dist profile), connected to a
# real dispatcher over loopback. Prints a Markdown table.
#
#   scripts/measure-device.sh
#   FUSION_DEVICE_BIN=path/to/fusion-host scripts/measure-device.sh   # another build
#
# The server is the dispatch bench's own server mode (`--serve`), so nothing
# else needs to be installed or running.
set -euo pipefail
cd "$(dirname "$0")/.."

# The binary that ships: the dist profile, as scripts/release builds it.
if [ -z "${FUSION_DEVICE_BIN:-}" ]; then
  cargo build --profile dist -q -p example-host
fi
cargo bench -q -p fusion-host-server --bench dispatch --no-run 2>/dev/null
bin=$(realpath "${FUSION_DEVICE_BIN:-${CARGO_TARGET_DIR:-target}/dist/fusion-host}")
server_bin=$(ls -t target/release/deps/dispatch-* | grep -v '\.d$' | head -1)

work=$(mktemp -d)
# The server reads its stdin until it closes: a `sleep` holds it open, and
# the exit trap stops it with the jobs (its stderr is not the caller's, so a
# caller reading this script's output through a pipe sees it end).
exec 3< <(sleep 3600 2>/dev/null)
holder=$!
trap 'kill $(jobs -p) "$holder" 2>/dev/null || true; rm -rf "$work"' EXIT
mkfifo "$work/server.out"
"$server_bin" --serve <&3 > "$work/server.out" &
read -r line < "$work/server.out"
addr=${line#listening on http://}
[ "$addr" != "$line" ] || { echo "the bench server did not start: $line" >&2; exit 1; }
code=$(curl -s -X POST "http://$addr/bench/mint" | sed 's/.*"code":"\([^"]*\)".*/\1/')

mkdir -p "$work/scans" "$work/config"
# `exec`: the job is the device itself, so the exit trap stops it.
(cd "$work/scans" && FUSION_HOST_CONFIG_DIR="$work/config" \
    exec "$bin" --server "http://$addr" --code "$code" > "$work/device.out" 2>&1) &
for _ in $(seq 100); do grep -q "Connected" "$work/device.out" 2>/dev/null && break; sleep 0.1; done
grep -q "Connected" "$work/device.out" || { cat "$work/device.out" >&2; exit 1; }
pid=$!
sleep 5  # idle: only heartbeats arrive
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
hwm_kb=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
threads=$(awk '/Threads/ {print $2}' "/proc/$pid/status")
anon_kb=$(awk '/RssAnon/ {print $2}' "/proc/$pid/status")
file_kb=$(awk '/RssFile/ {print $2}' "/proc/$pid/status")
size=$(stat -c %s "$bin")
# Resident pages by file: the binary's own, and the shared libraries'.
own_kb=$(awk -v exe="$(readlink -f "$bin")" '/^[0-9a-f]+-/ {mine = ($6 == exe)} mine && /^Rss:/ {s += $2} END {print s + 0}' "/proc/$pid/smaps")
pss_kb=$(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup")

echo "| measurement | value |"
echo "|---|---|"
printf '| binary size, stripped | %.1f MiB (%s bytes) |\n' "$(echo "$size / 1048576" | bc -l)" "$size"
echo "| dynamic libraries | $(ldd "$bin" | awk '{print $1}' | grep -v vdso | tr '\n' ' ') |"
printf '| idle connected, resident memory | %.1f MiB |\n' "$(echo "$rss_kb / 1024" | bc -l)"
printf '| of which anonymous (heap, stacks) / file-backed (pages of the binary) | %.1f MiB / %.1f MiB |\n' \
  "$(echo "$anon_kb / 1024" | bc -l)" "$(echo "$file_kb / 1024" | bc -l)"
printf '| of the file-backed: the binary itself / shared libraries | %.1f MiB / %.1f MiB |\n' \
  "$(echo "$own_kb / 1024" | bc -l)" "$(echo "($file_kb - $own_kb) / 1024" | bc -l)"
printf '| proportional set size (shared pages split among their users) | %.1f MiB |\n' "$(echo "$pss_kb / 1024" | bc -l)"
printf '| peak resident memory so far | %.1f MiB |\n' "$(echo "$hwm_kb / 1024" | bc -l)"
echo "| threads | $threads |"
