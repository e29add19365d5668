#!/bin/bash
# Captures real frames for the fuzz seed corpora: a weft daemon, three
# namespaces on two routed networks, and traffic that reaches ARP, the
# gateway (echo, TTL expiry, fragmentation, frag-needed, unreachable), DNS
# over UDP and TCP, and TCP transfers (GSO super-frames). Needs root.
#   fuzz/seeds/capture.sh target/debug/weft && python3 fuzz/seeds/make_seeds.py /tmp/weft-thard-seed/s1.pcap
set -u
W=${1:?usage: capture.sh PATH-TO-WEFT}
D=/tmp/weft-thard-seed
rm -rf $D; mkdir -p $D
S=$D/weft.sock
$W daemon --socket $S --state-dir $D/state >$D/log 2>&1 &
DP=$!
sleep 1
for n in s1 s2 s3; do ip netns add weft-thard-$n; ip -n weft-thard-$n link set lo up; done
$W --socket $S network create front --subnet 10.201.0.0/24 >/dev/null
$W --socket $S network create back --subnet 10.202.0.0/24 --mtu 1400 >/dev/null
$W --socket $S route allow front back >/dev/null
$W --socket $S attach front --netns weft-thard-s1 --name web1 >/dev/null
$W --socket $S attach front --netns weft-thard-s2 --name db >/dev/null
$W --socket $S attach back --netns weft-thard-s3 --name far >/dev/null
ip netns exec weft-thard-s1 tcpdump -i eth0 -s 0 -w $D/s1.pcap -U >/dev/null 2>&1 &
TP=$!
sleep 1
X="ip netns exec weft-thard-s1"
$X ping -c 1 -W 1 10.201.0.1 >/dev/null
$X ping -c 1 -W 1 10.201.0.3 >/dev/null
$X ping -c 1 -W 1 10.202.0.2 >/dev/null
$X ping -c 1 -W 1 -t 1 10.202.0.2 >/dev/null
$X ping -c 1 -W 1 -s 2000 10.202.0.2 >/dev/null
$X ping -c 1 -W 1 -M do -s 1450 10.202.0.2 >/dev/null
$X ping -c 1 -W 1 10.99.0.1 >/dev/null
$X ping -c 1 -W 1 10.201.0.77 >/dev/null
$X dig +time=1 +tries=1 @10.201.0.1 db >/dev/null
$X dig +time=1 +tries=1 @10.201.0.1 -x 10.201.0.3 >/dev/null
$X dig +time=1 +tries=1 @10.201.0.1 db.front AAAA >/dev/null
$X dig +time=1 +tries=1 +edns=0 +bufsize=1232 @10.201.0.1 far.back >/dev/null
$X dig +tcp +time=1 +tries=1 @10.201.0.1 db >/dev/null
ip netns exec weft-thard-s2 timeout 5 nc -l -p 5000 >/dev/null &
ip netns exec weft-thard-s3 timeout 5 nc -l -p 5001 >/dev/null &
sleep 0.5
head -c 200000 /dev/urandom | $X timeout 3 nc -q 1 10.201.0.3 5000
head -c 200000 /dev/urandom | $X timeout 3 nc -q 1 10.202.0.2 5001
$X bash -c 'echo hi > /dev/udp/10.201.0.3/9999'
sleep 1
kill $TP; sleep 0.5
kill $DP; wait $DP
for n in s1 s2 s3; do ip netns del weft-thard-$n; rm -rf /etc/netns/weft-thard-$n; done
ls -la $D/s1.pcap
