"""The dashboard's HTML, rendered on the server: every number and table is
in the page, so it reads without JavaScript. ``static/app.js`` adds the
hashrate charts and refreshes the ``data-live`` regions in place from the
same page every ``refresh_seconds`` (no reload, no build step).

Pure functions of the API's JSON values; every value is escaped.
"""
from __future__ import annotations

import math
import time
from html import escape
from pathlib import Path
from urllib.parse import quote

STATIC_TYPES = {".js": b"text/javascript; charset=utf-8", ".css": b"text/css; charset=utf-8",
                ".svg": b"image/svg+xml", ".png": b"image/png", ".ico": b"image/x-icon"}

_SI = ["", "k", "M", "G", "T", "P", "E", "Z"]


# -- formatting (static/app.js has the same rules for the charts) -----------------------
def fmt_hashrate(h) -> str:
    if h is None:
        return "–"
    h = float(h)
    i = 0
    while h >= 1000 and i < len(_SI) - 1:
        h /= 1000
        i += 1
    return f"{h:.3g} {_SI[i]}H/s" if h < 100 else f"{h:.0f} {_SI[i]}H/s"


def fmt_num(x, digits: int = 4) -> str:
    if x is None:
        return "–"
    x = float(x)
    if x == 0:
        return "0"
    if abs(x) >= 1e6:
        i = min(int(math.log10(abs(x)) // 3), len(_SI) - 1)
        return f"{x / 1000 ** i:.{digits - 1}g} {_SI[i]}"
    if abs(x) >= 1:
        return f"{x:,.{max(0, digits - len(str(int(abs(x)))))}f}" if abs(x) < 1000 else f"{x:,.0f}"
    return f"{x:.{digits}g}"


def fmt_int(x) -> str:
    return "–" if x is None else f"{int(x):,}"


def fmt_pct(x) -> str:
    return "–" if x is None else f"{float(x) * 100:.1f}%"


def fmt_btc(sats) -> str:
    if sats is None:
        return "–"
    whole, _, frac = f"{int(sats) / 1e8:.8f}".partition(".")
    frac = frac.rstrip("0").ljust(2, "0")
    return f"{whole}.{frac} BTC"


def fmt_time(t) -> str:
    if not t:
        return "–"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(t)))


def fmt_ago(t, now: float | None = None) -> str:
    if not t:
        return "never"
    s = max(0.0, (now or time.time()) - float(t))
    if s < 60:
        return f"{int(s)} s ago"
    if s < 3600:
        return f"{int(s // 60)} min ago"
    if s < 86400:
        return f"{s / 3600:.1f} h ago"
    return f"{s / 86400:.1f} days ago"


def fmt_duration(s) -> str:
    if s is None:
        return "–"
    s = float(s)
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def short(h: str | None, n: int = 10) -> str:
    if not h:
        return "–"
    return h if len(h) <= 2 * n + 1 else f"{h[:n]}…{h[-n:]}"


def plural(n, word: str) -> str:
    return f"{fmt_int(n)} {word}{'' if n == 1 else 's'}"


def e(x) -> str:
    return escape(str(x), quote=True)


STATUS_CLASS = {"confirmed": "ok", "credited": "ok", "submitted": "ok", "paid": "ok", "mature": "ok", "sent": "ok", "pending": "warn",
                "immature": "warn", "found": "warn", "orphaned": "bad", "rejected": "bad", "failed": "bad"}


def badge(status: str | None) -> str:
    s = status or "unknown"
    return f'<span class="badge {STATUS_CLASS.get(s, "")}">{e(s)}</span>'


def card(label: str, value: str, sub: str = "", key: str = "") -> str:
    k = f' id="card-{e(key)}"' if key else ""
    return (f'<div class="card"{k}><div class="label">{e(label)}</div><div class="value">{value}</div>'
            f'<div class="sub">{sub}</div></div>')


class Pages:
    def __init__(self, config, static_dir: Path):
        self.config = config
        self.name = config.pool.name
        self.network = config.network.name
        self.refresh = config.http.refresh_seconds
        self.static_dir = Path(static_dir)
        self._static: dict[str, tuple[bytes, bytes]] = {}

    # -- layout --------------------------------------------------------------------------
    def layout(self, title: str, body: str, *, page: str, chart: str = "", address: str = "") -> bytes:
        here = ' class="here"'
        nav = "".join(
            f'<a href="{href}"{here if page == key else ""}>{label}</a>'
            for key, href, label in (("pool", "/", "Pool"), ("blocks", "/blocks", "Blocks")))
        doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)} · {e(self.name)}</title>
<link rel="stylesheet" href="/static/style.css">
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<script src="/static/app.js" defer></script>
</head>
<body data-page="{e(page)}" data-refresh="{self.refresh:g}" data-chart="{e(chart)}" data-address="{e(address)}">
<header><div class="bar"><a class="brand" href="/">{e(self.name)}</a><span class="net">{e(self.network)}</span>
<nav>{nav}</nav>
<form class="search" action="/miner" method="get" role="search">
<input name="address" placeholder="Your payout address" aria-label="payout address" value="{e(address)}" autocomplete="off" spellcheck="false">
<button type="submit">Look up</button></form></div></header>
<main>{body}</main>
<footer>hashcoop · PPLNS · <a href="/api/v1">JSON API</a> · <span id="updated" data-live>{fmt_time(time.time())}</span></footer>
</body></html>"""
        return doc.encode()

    def chart(self, title: str) -> str:
        return f"""<section class="panel"><div class="panel-head"><h2>{e(title)}</h2>
<div class="ranges" role="group" aria-label="chart range"><button data-range="1h" class="on">1 h</button><button data-range="24h">24 h</button><button data-range="7d">7 d</button></div></div>
<div id="chart" class="chart" aria-label="{e(title)} chart"><noscript>The chart needs JavaScript; the figures above do not.</noscript></div></section>"""

    # -- pool -----------------------------------------------------------------------------
    def pool(self, s: dict) -> bytes:
        net, hr, rnd, luck = s["network"], s["hashrate"], s["round"], s["luck"]
        last = s.get("last_block")
        cards = "".join([
            card("Pool hashrate", e(fmt_hashrate(hr["5m"])), f"1 h {e(fmt_hashrate(hr['1h']))} · 24 h {e(fmt_hashrate(hr['24h']))}", "hashrate"),
            card("Miners", e(fmt_int(s["addresses_online"])), e(plural(s["workers_online"], "worker") + " online"), "miners"),
            card("Network difficulty", e(fmt_num(net["difficulty"])), f"height {e(fmt_int(net['height']))}", "network"),
            card("Round effort", e(fmt_pct(rnd["effort"])), f"{e(fmt_duration(rnd['duration']))} · {e(fmt_int(rnd['shares']))} shares", "effort"),
            card("Luck", e(fmt_pct(luck["luck"])), f"average effort {e(fmt_pct(luck['average_effort']))} over {e(plural(luck['blocks'], 'block'))}", "luck"),
            card("Blocks found", e(fmt_int(s["blocks_found"])),
                 (f'last <a href="/api/v1/blocks/{e(last["hash"])}">#{e(last["height"])}</a> {e(fmt_ago(last["time"]))}'
                  if last else "none yet"), "blocks"),
        ])
        body = f"""<h1>{e(self.name)} <small>{e(self.network)}</small></h1>
<section id="summary" class="cards" data-live>{cards}</section>
{self.chart("Pool hashrate")}
<section class="panel" id="recent" data-live><h2>Recent blocks</h2>{self.blocks_table(s.get("recent_blocks") or [])}
<p><a href="/blocks">All blocks →</a></p></section>
<section class="panel"><h2>Connect</h2>{self.connect(s)}</section>"""
        return self.layout("Pool", body, page="pool", chart="/api/v1/pool/hashrate")

    def connect(self, s: dict) -> str:
        p = s["pool"]
        window = (f"{e(fmt_num(p['window_difficulty']))} share difficulty" if p["window_difficulty"]
                  else f"{e(fmt_num(p['window_factor']))} × the network difficulty")
        rows = "".join(f"<tr><td>stratum+tcp://&lt;this host&gt;:{e(p['port'])}</td><td>{e(fmt_num(p['start_difficulty']))}</td>"
                       f"<td>{'vardiff' if p['vardiff'] else 'fixed'}</td></tr>" for p in s["pool"]["ports"])
        return (f'<p>User name: <code>YOUR_ADDRESS.worker_name</code>, any password (<code>d=NUMBER</code> asks for a fixed '
                f'difficulty). Payouts are PPLNS over a window of {window}.</p>'
                f'<div class="scroll"><table><thead><tr><th>URL</th><th>Start difficulty</th><th>Difficulty</th></tr></thead>'
                f'<tbody>{rows}</tbody></table></div>')

    def blocks_table(self, blocks: list[dict], payouts: bool = False) -> str:
        if not blocks:
            return '<p class="empty">No blocks found yet.</p>'
        rows = []
        for b in blocks:
            pay = b.get("payout")
            pay_cell = (f"<td>{badge(pay['status'])} {e(fmt_btc(pay['credited'])) if pay['credited'] else ''}</td>"
                        if pay else "<td>–</td>") if payouts else ""
            rows.append(
                f'<tr><td><a href="/api/v1/blocks/{e(b["hash"])}">{e(fmt_int(b["height"]))}</a></td>'
                f'<td class="mono" title="{e(b["hash"])}">{e(short(b["hash"], 8))}</td>'
                f'<td title="{e(fmt_time(b["time"]))}">{e(fmt_ago(b["time"]))}</td>'
                f'<td class="mono"><a href="/miner/{e(quote(b["finder_address"] or ""))}">{e(short(b["finder_address"], 6))}</a>'
                f'.{e(b["finder_worker"] or "")}</td>'
                f'<td>{e(fmt_pct(b["effort"]))}</td><td>{e(fmt_btc(b["reward"]))}</td><td>{badge(b["status"])}</td>{pay_cell}</tr>')
        pay_head = "<th>Payout (credited)</th>" if payouts else ""
        return ('<div class="scroll"><table class="blocks"><thead><tr><th>Height</th><th>Hash</th><th>Found</th><th>Finder</th>'
                f'<th>Effort</th><th>Reward</th><th>Status</th>{pay_head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>')

    # -- blocks ----------------------------------------------------------------------------
    def blocks(self, b: dict) -> bytes:
        limit, offset, total = b["limit"], b["offset"], b["total"]
        nav = []
        if offset > 0:
            nav.append(f'<a href="/blocks?offset={max(0, offset - limit)}&amp;limit={limit}">← newer</a>')
        if offset + limit < total:
            nav.append(f'<a href="/blocks?offset={offset + limit}&amp;limit={limit}">older →</a>')
        body = f"""<h1>Blocks</h1>
<section class="panel" id="blocklist" data-live><p>{e(fmt_int(total))} blocks found by the pool.</p>
{self.blocks_table(b["blocks"], payouts=True)}<p class="pager">{" · ".join(nav)}</p></section>"""
        return self.layout("Blocks", body, page="blocks")

    # -- miner ------------------------------------------------------------------------------
    def search(self, error: str | None, address: str = "") -> bytes:
        msg = f'<p class="error" role="alert">{e(error)}</p>' if error else ""
        body = f"""<h1>Look up a miner</h1>{msg}
<section class="panel"><form action="/miner" method="get" class="big-search">
<label for="a">Payout address ({e(self.network)})</label>
<input id="a" name="address" value="{e(address)}" autocomplete="off" spellcheck="false" required>
<button type="submit">Show my stats</button></form></section>"""
        return self.layout("Look up", body, page="search", address=address)

    def miner_unknown(self, address: str) -> bytes:
        body = f"""<h1>Miner <span class="mono addr">{e(address)}</span></h1>
<section class="panel" data-live id="unknown"><p class="empty">This pool has no shares or payouts for this address
(statistics expire after 8 days without shares). Point a miner at the pool with user name
<code>{e(address)}.worker_name</code> and this page fills in.</p></section>"""
        return self.layout("Miner", body, page="miner", address=address)

    def miner(self, a: dict) -> bytes:
        address = a["address"]
        hr = a["hashrate"]
        best = a.get("best_share") or {}
        pay = a.get("payouts")
        cards = "".join([
            card("Hashrate", e(fmt_hashrate(hr["5m"])), f"1 h {e(fmt_hashrate(hr['1h']))} · 24 h {e(fmt_hashrate(hr['24h']))}", "hashrate"),
            card("Workers online", f'{e(a["workers_online"])} <small>/ {e(len(a["workers"]))}</small>',
                 "online" if a["online"] else "offline", "workers"),
            card("Best share", e(fmt_num(best.get("difficulty"))), e(fmt_ago(best.get("time"))) if best else "–", "best"),
            card("Shares", e(fmt_int(a["accepted"])), f"{e(fmt_int(a['rejected_total']))} rejected · last {e(fmt_ago(a['last_share']))}", "shares"),
            card("Balance", e(fmt_btc(pay["owed"])) if pay else "–",
                 (f"{e(fmt_btc(pay['paid']))} paid · {e(plural(pay['pending_blocks'], 'block'))} maturing"
                  + (f' · <span class="error">on hold: {e(pay["hold_reason"])}</span>' if pay["hold_reason"] else "")
                  if pay else "payout service not connected"),
                 "balance"),
        ])
        body = f"""<h1>Miner <span class="mono addr">{e(address)}</span></h1>
<section id="summary" class="cards" data-live>{cards}</section>
{self.chart("Hashrate")}
<section class="panel" id="workers" data-live><h2>Workers</h2>{self.workers_table(a["workers"])}</section>
<section class="panel" id="payments" data-live><h2>Payouts</h2>{self.payments(pay)}</section>
<section class="panel" id="myblocks" data-live><h2>Your part of each block</h2>{self.address_blocks(a.get("blocks") or [], pay)}</section>"""
        return self.layout("Miner", body, page="miner", chart=f"/api/v1/addresses/{quote(address)}/hashrate", address=address)

    def workers_table(self, workers: list[dict]) -> str:
        if not workers:
            return '<p class="empty">No workers.</p>'
        rows = []
        for w in sorted(workers, key=lambda w: (not w["online"], w["worker"])):
            best = (w.get("best_share") or {}).get("difficulty")
            rows.append(
                f'<tr class="{"on" if w["online"] else "off"}"><td>{e(w["worker"])}</td>'
                f'<td><span class="dot"></span>{"online" if w["online"] else "offline"}</td>'
                f'<td>{e(fmt_hashrate(w["hashrate"]["5m"]))}</td><td>{e(fmt_hashrate(w["hashrate"]["1h"]))}</td>'
                f'<td>{e(fmt_int(w["accepted"]))}</td><td>{e(fmt_int(w["rejected_total"]))}</td>'
                f'<td>{e(fmt_num(best))}</td><td title="{e(fmt_time(w["last_share"]))}">{e(fmt_ago(w["last_share"]))}</td></tr>')
        return ('<div class="scroll"><table class="workers"><thead><tr><th>Worker</th><th>State</th><th>5 min</th><th>1 h</th>'
                '<th>Accepted</th><th>Rejected</th><th>Best share</th><th>Last share</th></tr></thead>'
                f'<tbody>{"".join(rows)}</tbody></table></div>')

    def payments(self, pay: dict | None) -> str:
        if pay is None:
            return '<p class="empty">The payout service is not connected to this pool, so balances and payments are not shown.</p>'
        head = (f'<p>Credited {e(fmt_btc(pay["credited"]))} over {e(plural(pay["credited_blocks"], "block"))} · '
                f'paid {e(fmt_btc(pay["paid"]))} ({e(fmt_btc(pay["paid_confirmed"]))} confirmed'
                + (f', {e(fmt_btc(pay["in_flight"]))} on its way' if pay["in_flight"] else "") + ')</p>')
        payments = pay["payments"]
        if not payments:
            return head + '<p class="empty">No payments yet: balances are paid once they reach the pool\'s minimum.</p>'
        rows = "".join(
            f'<tr><td>{e(fmt_time(p["confirmed_time"] or p["sent_time"] or p["created"]))}</td><td>{e(fmt_btc(p["amount"]))}</td>'
            f'<td class="mono txid">{e(p["txid"] or "–")}</td><td>{badge(p["status"])}</td>'
            f'<td>{e(fmt_int(p["confirmations"]))}</td></tr>' for p in payments)
        return head + ('<div class="scroll"><table class="payments"><thead><tr><th>Time</th><th>Amount</th><th>Transaction</th>'
                       f'<th>Status</th><th>Confirmations</th></tr></thead><tbody>{rows}</tbody></table></div>')

    def address_blocks(self, blocks: list[dict], pay: dict | None) -> str:
        if not blocks:
            return '<p class="empty">None of the recent blocks\' windows include this address.</p>'
        rows = []
        for b in blocks:
            c = b.get("payout") or {}
            rows.append(
                f'<tr><td><a href="/api/v1/blocks/{e(b["hash"])}">{e(fmt_int(b["height"]))}</a></td><td>{badge(b["status"])}</td>'
                f'<td>{e(fmt_pct(b["fraction"]))}</td><td>{e(fmt_num(b["credited_difficulty"]))}</td>'
                f'<td>{e(fmt_btc(b["reward_share"]))}</td><td>{e(fmt_btc(c.get("credited")))}</td>'
                f'<td>{badge(c["status"]) if c.get("status") else "–"}</td></tr>')
        return ('<div class="scroll"><table class="myblocks"><thead><tr><th>Block</th><th>Block status</th><th>Your part</th>'
                '<th>Your difficulty</th><th>Share of reward</th><th>Credited</th><th>Payout status</th></tr></thead>'
                f'<tbody>{"".join(rows)}</tbody></table></div>'
                '<p class="note">"Share of reward" is your fraction of the block\'s PPLNS window times the block reward; '
                '"Credited" is what the payout service booked for you (after the pool fee).</p>')

    # -- errors and static ---------------------------------------------------------------------
    def error(self, status: int, message: str) -> bytes:
        body = f'<h1>{e(status)}</h1><section class="panel"><p class="error" role="alert">{e(message)}</p></section>'
        return self.layout(f"Error {status}", body, page="error")

    def static(self, name: str) -> tuple[bytes, bytes] | None:
        if name in self._static:
            return self._static[name]
        path = self.static_dir / name
        ctype = STATIC_TYPES.get(path.suffix)
        if ctype is None or path.parent != self.static_dir or not path.is_file():
            return None
        self._static[name] = found = (path.read_bytes(), ctype)
        return found
