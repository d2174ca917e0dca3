// hashcoop dashboard: plain JavaScript, no build step, no outside requests.
// Every figure is already in the server-rendered page; this script
//  * refreshes the page's data-live regions in place every data-refresh seconds
//    (it fetches the same page and swaps those elements: one renderer, the server's),
//  * draws the hashrate chart from the JSON API (body data-chart).
"use strict";
(function () {
  const body = document.body;
  const refresh = Math.max(1, parseFloat(body.dataset.refresh || "10")) * 1000;
  const chartUrl = body.dataset.chart || "";
  const SI = ["", "k", "M", "G", "T", "P", "E", "Z"];
  const RANGES = { "1h": ["10s", 3600], "24h": ["5m", 86400], "7d": ["5m", 7 * 86400] };
  let range = "1h";
  let points = [];

  function fmtHashrate(h) {
    let i = 0;
    while (h >= 1000 && i < SI.length - 1) { h /= 1000; i++; }
    return (h < 100 ? h.toPrecision(3) : h.toFixed(0)) + " " + SI[i] + "H/s";
  }

  function fmtTime(t, span) {
    const d = new Date(t * 1000);
    const hm = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return span > 2 * 86400 ? d.toLocaleDateString([], { month: "short", day: "numeric" }) : hm;
  }

  // -- live regions -------------------------------------------------------------
  async function update() {
    try {
      const r = await fetch(location.href, { headers: { Accept: "text/html" }, cache: "no-store" });
      if (!r.ok && r.status !== 404) throw new Error("HTTP " + r.status);
      const doc = new DOMParser().parseFromString(await r.text(), "text/html");
      doc.querySelectorAll("[data-live][id]").forEach(function (fresh) {
        const old = document.getElementById(fresh.id);
        if (old && old.innerHTML !== fresh.innerHTML) old.innerHTML = fresh.innerHTML;
      });
      body.classList.remove("stale");
      body.dataset.updated = String(Date.now());
    } catch (e) {
      body.classList.add("stale");
      const u = document.getElementById("updated");
      if (u) u.textContent = "update failed (" + e.message + "), retrying";
    }
    if (chartUrl) await loadChart();
  }

  // -- chart -----------------------------------------------------------------------
  async function loadChart() {
    const [res, span] = RANGES[range];
    const since = Math.floor(Date.now() / 1000) - span;
    try {
      const r = await fetch(chartUrl + "?resolution=" + res + "&since=" + since, { cache: "no-store" });
      if (!r.ok) throw new Error("HTTP " + r.status);
      points = (await r.json()).series || [];
      // a pool or miner that started within the range: leave out the empty lead-in
      const first = points.findIndex(function (p) { return p[1] > 0; });
      if (first > 1) points = points.slice(first - 1);
    } catch (e) {
      points = [];
    }
    draw();
  }

  function el(name, attrs, text) {
    const n = document.createElementNS("http://www.w3.org/2000/svg", name);
    for (const k in attrs) n.setAttribute(k, attrs[k]);
    if (text !== undefined) n.textContent = text;
    return n;
  }

  function draw() {
    const box = document.getElementById("chart");
    if (!box) return;
    box.textContent = "";
    if (!points.length) {
      const p = document.createElement("div");
      p.className = "empty";
      p.textContent = "No hashrate in this range yet.";
      box.appendChild(p);
      return;
    }
    const w = Math.max(200, box.clientWidth), h = Math.max(120, box.clientHeight);
    const left = 64, right = 8, top = 8, bottom = 22;
    const t0 = points[0][0], t1 = points[points.length - 1][0];
    const max = Math.max.apply(null, points.map(function (p) { return p[1]; })) || 1;
    const x = function (t) { return left + (t1 > t0 ? (t - t0) / (t1 - t0) : 0.5) * (w - left - right); };
    const y = function (v) { return top + (1 - v / max) * (h - top - bottom); };
    const svg = el("svg", { viewBox: "0 0 " + w + " " + h, role: "img", "aria-label": "hashrate, maximum " + fmtHashrate(max) });
    for (let i = 0; i <= 4; i++) {
      const v = max * i / 4;
      svg.appendChild(el("line", { x1: left, x2: w - right, y1: y(v), y2: y(v), class: "grid" }));
      svg.appendChild(el("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" }, fmtHashrate(v)));
    }
    const n = Math.max(2, Math.min(6, points.length, Math.floor((w - left) / 90)));
    for (let i = 0; i < n; i++) {
      const t = t0 + (t1 - t0) * (n > 1 ? i / (n - 1) : 0.5);
      svg.appendChild(el("text", { x: x(t), y: h - 6, "text-anchor": i === 0 ? "start" : (i === n - 1 ? "end" : "middle") },
        fmtTime(t, t1 - t0)));
    }
    let line = "";
    points.forEach(function (p, i) { line += (i ? "L" : "M") + x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1); });
    const area = line + "L" + x(t1).toFixed(1) + "," + y(0) + "L" + x(t0).toFixed(1) + "," + y(0) + "Z";
    svg.appendChild(el("path", { d: area, class: "area" }));
    svg.appendChild(el("path", { d: line, class: "line" }));
    const last = points[points.length - 1];
    svg.appendChild(el("title", {}, "latest " + fmtHashrate(last[1])));
    box.appendChild(svg);
    box.dataset.points = String(points.length);
  }

  document.querySelectorAll("[data-range]").forEach(function (b) {
    b.addEventListener("click", function () {
      range = b.dataset.range;
      document.querySelectorAll("[data-range]").forEach(function (o) { o.classList.toggle("on", o === b); });
      loadChart();
    });
  });
  let resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(draw, 150);
  });

  if (chartUrl) loadChart();
  setInterval(update, refresh);
})();
