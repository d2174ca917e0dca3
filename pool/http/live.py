"""Figures of the running process, read on the reactor thread (no I/O):
the template being mined, Stratum connections, blocks being submitted,
node and accounting health."""
from __future__ import annotations

from hashcoop.pool.core.btc.target import bits_difficulty


class Live:
    def __init__(self, *, clock, config, work=None, stratum=None, submitter=None, nodes=None, accounting=None):
        self.clock = clock
        self.config = config
        self.work = work
        self.stratum = stratum
        self.submitter = submitter
        self.nodes = nodes
        self.accounting = accounting
        self.started = clock.seconds()

    def network(self) -> dict:
        tpl = getattr(self.work, "current", None)
        if tpl is None:
            return {"name": self.config.network.name, "height": None, "difficulty": None, "mining_height": None,
                    "block_reward": None, "template_age": None}
        return {
            "name": self.config.network.name,
            "height": tpl.height - 1,  # the chain tip the pool builds on
            "difficulty": bits_difficulty(tpl.bits),
            "mining_height": tpl.height,
            "block_reward": tpl.coinbasevalue,
            "template_age": self.work.template_age(),
        }

    def pool(self) -> dict:
        c = self.config
        ports = [{"port": p.port, "start_difficulty": p.start_difficulty, "min_difficulty": p.min_difficulty,
                  "max_difficulty": p.max_difficulty, "vardiff": p.vardiff, "name": p.name} for p in c.stratum.ports]
        return {"name": c.pool.name, "network": c.network.name, "payout_scheme": "PPLNS",
                "window_factor": c.accounting.window_factor, "window_difficulty": c.accounting.window_difficulty,
                "ports": ports, "worker_offline_after": c.accounting.worker_offline_after}

    def connections(self) -> dict:
        s = self.stratum
        if s is None:
            return {"connections": 0, "miners_ready": 0}
        return {"connections": len(s.sessions), "miners_ready": len(s.ready)}

    # -- operator ---------------------------------------------------------------------
    def operator_status(self) -> dict:
        now = self.clock.seconds()
        nodes = []
        if self.nodes is not None:
            for name in self.nodes.names:
                client = self.nodes.client(name)
                nodes.append({"name": name, "healthy": self.nodes.is_healthy(name), "answered_last_call": client.up})
        blocks = []
        if self.submitter is not None:
            for t in self.submitter.blocks.values():
                blocks.append({"hash": t.hash, "height": t.found.height, "status": "pending" if t.status == "new" else t.status,
                               "final": t.final, "verdicts": dict(t.verdicts), "reason": t.reason})
            blocks.sort(key=lambda b: -b["height"])
        acct = None
        if self.accounting is not None:
            a = self.accounting
            acct = {"shares_buffered": a.buffered(), "batches_written": a.batches_written,
                    "shares_written": a.shares_written}
        by_port: dict[str, dict] = {}
        if self.stratum is not None:
            for sess in self.stratum.sessions:
                p = by_port.setdefault(str(sess.port.port), {"connections": 0, "authorized": 0})
                p["connections"] += 1
                p["authorized"] += 1 if sess.authorized else 0
        return {"time": now, "uptime": now - self.started, "network": self.network(), "nodes": nodes,
                "stratum": {**self.connections(), "ports": by_port}, "accounting": acct, "blocks": blocks[:50]}

    def sessions(self, limit: int, offset: int) -> dict:
        rows = []
        if self.stratum is not None:
            for s in self.stratum.sessions:
                rows.append({
                    "ip": s.ip, "port": s.port.port, "user_agent": s.user_agent, "connected_at": s.connected_at,
                    "workers": sorted(w.username for w in s.workers.values()), "authorized": s.authorized,
                    "difficulty": s.difficulty, "accepted": s.accepted, "rejected": s.rejects,
                    "last_share": s.last_share_at or None,
                })
        rows.sort(key=lambda r: r["connected_at"])
        return {"total": len(rows), "limit": limit, "offset": offset, "sessions": rows[offset:offset + limit]}
