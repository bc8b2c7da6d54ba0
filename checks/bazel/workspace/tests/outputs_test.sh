#!/bin/sh
set -eu
fail() { echo "FAIL: $*" >&2; exit 1; }
[ "$(cat gen/multi/one.txt)" = one ] || fail one.txt
[ "$(cat gen/multi/two.txt)" = two ] || fail two.txt
[ "$(cat gen/multi/nested/deeper/three.txt)" = three ] || fail three.txt
[ "$(cat gen/tool_output.txt)" = "tool ran with 3: a b c" ] || fail tool_output.txt
[ "$(sed -n 2p gen/big_checksum.txt | tr -d ' ')" -gt 10485760 ] || fail "big.txt is not over 10 MiB"
[ "$(sed -n 1p tree/many_summary.txt | tr -d ' ')" = 1200 ] || fail "many_summary inputs"
[ "$(sed -n 2p tree/many_summary.txt | tr -d ' ')" = 1200 ] || fail "many_summary lines"
grep -q '^./sub/subsub/leaf.txt$' tree/tree_listing.txt || fail "tree listing"
grep -q '^in-tree$' tree/tree_listing.txt || fail "tree executable"
echo ok
