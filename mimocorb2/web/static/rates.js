// Rates over time: one line per buffer, log scale; zero rates are gaps (log axes have no 0).
import { $, getJSON, PALETTE } from "./util.js";

const LIVE_WINDOWS = new Set(["60", "600"]);

// whole decades around the data (a log axis cannot show 0; no data: 0.1 .. 10)
export function logRange(min, max) {
  const lo = min > 0 ? 10 ** Math.floor(Math.log10(min)) : 0.1;
  const hi = max > 0 ? 10 ** Math.ceil(Math.log10(max * 1.01)) : 10;
  return [lo, Math.max(hi, lo * 10)];
}

export class RatesChart {
  constructor(root) {
    this.root = root;
    this.window = "600";
    this.names = [];
    this.data = [[]];
    this.plot = null;
    this.lastFetch = 0;
    for (const b of document.querySelectorAll("#rate-windows button")) {
      b.addEventListener("click", () => {
        document.querySelectorAll("#rate-windows button").forEach((x) => x.classList.toggle("on", x === b));
        this.window = b.dataset.window;
        this.reload();
      });
    }
    new ResizeObserver(() => this.resize()).observe(root);
  }

  resize() {
    if (this.plot) this.plot.setSize({ width: Math.max(300, this.root.clientWidth - 8), height: 240 });
  }

  build(names) {
    // legend: "--" away from the cursor (as for the time), 0 where the rate was 0 (drawn as a gap)
    const rateText = (u, v, s, idx) => (idx == null ? "--" : v == null ? "0" : v.toFixed(1));
    this.names = names;
    if (this.plot) this.plot.destroy();
    const opts = {
      width: Math.max(300, this.root.clientWidth - 8), height: 240,
      scales: { x: { time: true }, y: { distr: 3, log: 10,
        range: (u, min, max) => logRange(min, max) } },
      axes: [{}, { label: "events/s" }],
      series: [{}, ...names.map((n, i) => ({ label: n, stroke: PALETTE[i % PALETTE.length], width: 1.5,
        spanGaps: false, points: { show: false }, value: rateText }))],
    };
    this.data = [[], ...names.map(() => [])];
    this.plot = new uPlot(opts, this.data, this.root);
  }

  async reload() {
    this.lastFetch = Date.now();
    let h;
    try { h = await getJSON(`/api/history?window=${this.window}`); } catch { return; }
    if (!h.names.length) return;
    if (h.names.join() !== this.names.join() || !this.plot) this.build(h.names);
    this.data = [h.t, ...h.names.map((n) => h.rates[n].map((v) => (v > 0 ? v : null)))];
    this.plot.setData(this.data);
    this.root.dataset.points = String(h.t.length);
  }

  // a live point from a status frame
  push(point) {
    if (!point || !this.plot) return;
    if (!LIVE_WINDOWS.has(this.window)) {
      if (Date.now() - this.lastFetch > 30000) this.reload();
      return;
    }
    const span = Number(this.window);
    this.data[0].push(point.t);
    this.names.forEach((n, i) => this.data[i + 1].push(point.rates[n] > 0 ? point.rates[n] : null));
    while (this.data[0].length && this.data[0][0] < point.t - span) this.data.forEach((s) => s.shift());
    this.plot.setData(this.data);
    this.root.dataset.points = String(this.data[0].length);
  }
}
