"""What both network sides (stratum, http) ask of a Twisted transport."""
from __future__ import annotations


def unsent_bytes(transport) -> int:
    """Output handed to a Twisted file-descriptor transport and not yet taken
    by the socket (the process's memory): its ``dataBuffer`` past ``offset``
    plus ``_tempDataLen``, those of the transport a wrapper (TLS) writes to;
    0 for transports that do not say."""
    t = transport
    inner = getattr(t, "transport", None)
    if inner is not None:
        t = inner
    data = getattr(t, "dataBuffer", b"")
    return len(data) - getattr(t, "offset", 0) + getattr(t, "_tempDataLen", 0)
