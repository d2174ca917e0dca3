#!/bin/sh
# Helpers of the compose stack's "regtest" profile (docker/compose.yaml).
#   regtest.sh setup             wallet "pool" with the regtest example's pool
#                                key, and 101 blocks (once)
#   regtest.sh network SECONDS   a block to another address every SECONDS
set -eu
cli() { bitcoin-cli -conf=/etc/bitcoin/bitcoin.conf -chain=regtest -rpcconnect=bitcoind -rpccookiefile=/run/bitcoind/.cookie "$@"; }

# The regtest example's pool address bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080
# belongs to private key 1 (a public test vector): only ever use it on regtest.
POOL_KEY=cMahea7zqjxrtgAbB7LSGbcQUr1uX1ojuat9jZodMN87JcbXMTcA
# Anyone's blocks, "the rest of the network"
OTHER=bcrt1qj4j7j704sq2yumjs0xq2hp2xhaukegh4emmvfn

wait_node() {
    i=0
    until cli getblockchaininfo > /dev/null 2>&1; do
        i=$((i + 1))
        [ "$i" -lt 120 ] || { echo "bitcoind did not answer in 120 s" >&2; exit 1; }
        sleep 1
    done
}

case "${1:-}" in
setup)
    wait_node
    if ! cli listwallets | grep -q '"pool"'; then
        cli -named createwallet wallet_name=pool load_on_startup=true > /dev/null 2>&1 || cli loadwallet pool > /dev/null
    fi
    desc=$(cli getdescriptorinfo "wpkh($POOL_KEY)" | python3 -c 'import json,sys; print(json.load(sys.stdin)["descriptor"])')
    checksum=${desc##*#}
    cli -rpcwallet=pool importdescriptors "[{\"desc\":\"wpkh($POOL_KEY)#$checksum\",\"timestamp\":0}]" > /dev/null
    height=$(cli getblockcount)
    if [ "$height" -lt 101 ]; then
        cli generatetoaddress $((101 - height)) "$OTHER" > /dev/null
    fi
    echo "regtest ready: wallet pool holds the pool address's key, height $(cli getblockcount)"
    ;;
network)
    wait_node
    while true; do
        cli generatetoaddress 1 "$OTHER" > /dev/null
        sleep "${2:-10}"
    done
    ;;
*)
    echo "usage: regtest.sh setup | network SECONDS" >&2
    exit 2
    ;;
esac
