#!/usr/bin/env bash
# A mixed port under its own storm: endpoint A sends one iperf3 TCP stream
# to endpoint B, first quietly, then while a Python thread in A's namespace
# floods broadcast ARP requests out of the same interface (an AF_PACKET
# socket, as fast as it can for 6 s). Prints both throughputs, the ports'
# rx, storm_pauses and storm drops, and the kernel's TX drops on A's TAP.
# Needs root, iperf3, python3 and a release build; W=PATH picks the weft
# binary (default: target/release/weft). Namespaces weft-tmix-a/b, the
# daemon and /tmp/weft-tmix are removed on exit.
set -u
W=${W:-$(dirname "$0")/../../target/release/weft}
D=/tmp/weft-tmix; rm -rf $D; mkdir -p $D; export WEFT_SOCKET=$D/sock
A=weft-tmix-a; B=weft-tmix-b; DP=; SP=
cleanup() { [ -n "$SP" ] && kill $SP 2>/dev/null; [ -n "$DP" ] && kill $DP 2>/dev/null; wait 2>/dev/null; for n in $A $B; do ip netns pids $n 2>/dev/null | xargs -r kill 2>/dev/null; done; ip netns del $A 2>/dev/null; ip netns del $B 2>/dev/null; rm -rf $D /etc/netns/$A /etc/netns/$B; }
trap cleanup EXIT
ip netns add $A; ip netns add $B
$W daemon --socket $D/sock --state-dir $D/state > $D/log 2>&1 & DP=$!
for i in $(seq 50); do [ -S $D/sock ] && break; sleep 0.1; done
$W network create mix --subnet 10.237.0.0/24 >/dev/null
$W attach --netns $A mix --name a >/dev/null
$W attach --netns $B mix --name b >/dev/null
IFA=$(ip -n $A -j link | python3 -c 'import json,sys; print([l["ifname"] for l in json.load(sys.stdin) if l["ifname"]!="lo"][0])')
MACA=$(ip -n $A -j link show dev $IFA | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])')
IPA=$(ip -n $A -j addr show dev $IFA | python3 -c 'import json,sys; print([a["local"] for a in json.load(sys.stdin)[0]["addr_info"] if a["family"]=="inet"][0])')
IPB=$(ip -n $B -j addr | python3 -c 'import json,sys; print([a["local"] for l in json.load(sys.stdin) for a in l["addr_info"] if a["family"]=="inet" and l["ifname"]!="lo"][0])')
ip netns exec $B iperf3 -s -D -1 -p 5299 >/dev/null; sleep 0.3
ip netns exec $A ping -c1 -W2 $IPB >/dev/null || echo "no ping"
echo "quiet:"; ip netns exec $A iperf3 -c $IPB -p 5299 -t 4 -J | python3 -c 'import json,sys; d=json.load(sys.stdin); print("  %.2f Gbit/s, retransmits %d"%(d["end"]["sum_received"]["bits_per_second"]/1e9, d["end"]["sum_sent"].get("retransmits",0)))'
ip netns exec $B iperf3 -s -D -1 -p 5299 >/dev/null; sleep 0.3
ip netns exec $A python3 - $IFA $MACA $IPA <<'PY' & SP=$!
import socket,sys,time
ifa,mac,ip=sys.argv[1],bytes.fromhex(sys.argv[2].replace(':','')),socket.inet_aton(sys.argv[3])
f=b'\xff'*6+mac+bytes([8,6,0,1,8,0,6,4,0,1])+mac+ip+b'\0'*6+socket.inet_aton('10.237.0.250')
s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW); s.bind((ifa,0)); n=0; t=time.time()
while time.time()-t<6:
    for _ in range(1000):
        try: s.send(f); n+=1
        except OSError: pass
print("  storm sender: %.0f frames/s"%(n/(time.time()-t)))
PY
sleep 0.5
echo "A storming while sending TCP:"; ip netns exec $A iperf3 -c $IPB -p 5299 -t 4 -J | python3 -c 'import json,sys; d=json.load(sys.stdin); print("  %.2f Gbit/s, retransmits %d"%(d["end"]["sum_received"]["bits_per_second"]/1e9, d["end"]["sum_sent"].get("retransmits",0)))'
wait $SP
$W stats --json 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); [print("  port",p["endpoint"],"rx",p["rx_packets"],"pauses",p.get("storm_pauses"),"drops",p["drops"]) for p in d["ports"]]' || $W stats
echo "  A TAP kernel tx_dropped: $(ip -n $A -s -j link show dev $IFA | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["stats64"]["tx"]["dropped"])')"
