#!/usr/bin/env bash
# Size and idle memory of the shipped `fusion-host` binary (scripts/build-device), connected to a
# real dispatcher over loopback. Prints a Markdown table.
#
#   scripts/measure-device.sh
#   FUSION_DEVICE_BIN=path/to/fusion-host scripts/measure-device.sh   # another build
#
# The server is the dispatch bench's own server mode (`--serve`), so nothing
# else needs to be installed or running.
set -euo pipefail
cd "$(dirname "$0")/.."

# The binary that ships, as scripts/release builds it.
bin=$(realpath "${FUSION_DEVICE_BIN:-$(scripts/build-device)}")
. scripts/bench-server.sh

# `exec`: the job is the device itself, so the exit trap stops it.
(cd "$work/scans" && FUSION_HOST_CONFIG_DIR="$work/config" \
    exec "$bin" --server "http://$addr" --code "$code" > "$work/device.out" 2>&1) &
pid=$!
wait_connected "$work/device.out" 100
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
# How much of example-host/fusion-host.order this build still has: a list
# made before a dependency changed names functions the build no longer has
# (scripts/order-device makes it again). Read from the unstripped build.
if [ -z "${FUSION_DEVICE_BIN:-}" ]; then
  found=$(nm --defined-only "$(dirname "$bin")/../fusion-host" | awk '{print $3}' | LC_ALL=C sort -u \
    | LC_ALL=C comm -12 - example-host/fusion-host.order | wc -l)
  echo "| start-up functions laid out together (example-host/fusion-host.order) | $found of $(wc -l < example-host/fusion-host.order) |"
fi
