"""hashcoop devnode: a stand-in for Bitcoin Core v31 on regtest.

No bitcoind is available on the machines this project is developed and
tested on, so the pool's tests and demo talk JSON-RPC to this node instead.
The pool never special-cases it: it answers every RPC the pool uses with
Core's fields, types, error codes and messages, and it checks submitted
blocks for real (everything but scripts and signatures).

Modules:

* ``consensus``: regtest rules, strict decoding, sigops, finality (pure)
* ``chain``: block index, UTXO set, validation, reorgs, templates (pure)
* ``mempool``: mempool, package selection, synthetic faucet transactions (pure)
* ``script``: addresses, asm, descriptors as Core shows them (pure)
* ``rpc``: the RPC methods over a Chain (pure)
* ``store``: ``--persist`` journal (file I/O)
* ``server``: HTTP JSON-RPC, longpoll, ZMQ, blocknotify, the DevNode wiring
* ``cli``: ``hashcoop devnode``
"""
