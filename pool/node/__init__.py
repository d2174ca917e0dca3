"""Work from bitcoind: the node set and its health (``nodes``), new-block
detection (``tipwatch``), the work source that turns templates into jobs
(``work``) and block submission with its verdicts (``blocks``)."""
