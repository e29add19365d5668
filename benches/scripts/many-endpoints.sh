#!/usr/bin/env bash
# Attaches N endpoints (default 1000) to one weft daemon, one network, and
# reports each attach's latency (timed around the whole `weft attach`
# process), the daemon's resident memory, and iperf3 TCP between two of the
# endpoints. Needs root, iperf3 and a release build (cargo build --release).
# Everything it makes (namespaces weft-bs<pid>-*, the daemon, a temp dir)
# is removed on exit, also on failure or Ctrl-C.
set -euo pipefail
n="${1:-1000}"
weft="$(dirname "$0")/../../target/release/weft"
tmp="$(mktemp -d /tmp/weft-bs.XXXXXX)"
prefix="weft-bs$$-"
daemon=""
cleanup() {
  [ -n "$daemon" ] && kill -TERM "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true
  for ns in $(ip netns list | awk '{print $1}' | grep "^$prefix" || true); do ip netns del "$ns"; done
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

"$weft" daemon --socket "$tmp/s.sock" --state-dir "$tmp/state" >"$tmp/log" 2>&1 &
daemon=$!
for _ in $(seq 50); do "$weft" --socket "$tmp/s.sock" status >/dev/null 2>&1 && break; sleep 0.1; done
"$weft" --socket "$tmp/s.sock" network create many --subnet 10.240.0.0/16 >/dev/null
for i in $(seq "$n"); do ip netns add "$prefix$i"; done
echo "daemon before: $(grep VmRSS /proc/$daemon/status)"
for i in $(seq "$n"); do
  start=$(date +%s%N)
  "$weft" --socket "$tmp/s.sock" attach many --netns "$prefix$i" --no-resolv-conf >/dev/null
  echo $(( ($(date +%s%N) - start) / 1000 )) >>"$tmp/latency"
done
echo "daemon after $n attaches: $(grep VmRSS /proc/$daemon/status)"
sort -n "$tmp/latency" | awk '{a[NR]=$1} END {printf "attach latency: p50 %.1f ms, p99 %.1f ms, max %.1f ms\n", a[int(NR*0.5)]/1000, a[int(NR*0.99)]/1000, a[NR]/1000}'
ip netns exec "${prefix}2" iperf3 -s -1 -D
sleep 0.3
ip netns exec "${prefix}1" iperf3 -c 10.240.0.3 -t 5 | grep receiver
