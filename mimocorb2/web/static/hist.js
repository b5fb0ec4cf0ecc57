// Histogram panels, from the files of exporters.histogram (pushed when they change).
import { el, fmtNumber } from "./util.js";
import { logRange } from "./rates.js";

export class HistogramPanels {
  constructor(root) {
    this.root = root;
    this.cards = new Map(); // "dir/channel" -> {root, plot, log, info, data}
  }

  clear() {
    for (const card of this.cards.values()) if (card.plot) card.plot.destroy();
    this.cards.clear();
    this.root.replaceChildren();
  }

  update(panels) {
    if (!panels.length) {
      this.root.replaceChildren(el("p", { class: "muted", text: "no histogram workers in this setup" }));
      this.cards.clear();
      return;
    }
    if (this.root.querySelector("p.muted")) this.root.replaceChildren();
    for (const p of panels) for (const ch of p.channels) this.updateCard(p, ch);
  }

  updateCard(panel, ch) {
    const key = `${panel.directory}/${ch.channel}`;
    let card = this.cards.get(key);
    if (!card) {
      card = { log: false };
      const logBtn = el("button", { type: "button", text: "log" });
      logBtn.addEventListener("click", () => {
        card.log = !card.log;
        logBtn.classList.toggle("on", card.log);
        this.draw(card, true);
      });
      card.info = el("div", { class: "muted" });
      card.body = el("div", { class: "chart" });
      const base = `/api/histograms/${encodeURIComponent(panel.directory)}`;
      card.root = el("div", { class: "card histogram", "data-key": key, "data-entries": "0" },
        el("h3", {}, `${ch.channel} `, el("span", { class: "muted", text: `(${panel.buffer})` })),
        el("div", { class: "tools" }, logBtn,
          el("a", { href: `${base}/${encodeURIComponent(ch.channel)}.npy`, download: true, text: ".npy" }),
          el("a", { href: `${base}/info.csv`, download: true, text: "info.csv" })),
        card.info, card.body);
      this.root.append(card.root);
      this.cards.set(key, card);
    }
    card.ch = ch;
    card.info.textContent = `entries ${fmtNumber(ch.entries, 0)}   underflow ${ch.underflow}   overflow ${ch.overflow}` +
      (panel.complete ? "   (final)" : "");
    card.root.dataset.entries = String(ch.entries);
    this.draw(card, false);
  }

  draw(card, rebuild) {
    const ch = card.ch;
    if (!ch || !ch.counts.length) return;
    const width = (ch.max - ch.min) / ch.bins;
    const x = ch.counts.map((_, i) => ch.min + i * width);
    x.push(ch.max);
    const y = [...ch.counts, ch.counts[ch.counts.length - 1]];
    const ys = card.log ? y.map((v) => (v > 0 ? v : null)) : y;
    if (!card.plot || rebuild || card.bins !== ch.bins) {
      if (card.plot) card.plot.destroy();
      card.bins = ch.bins;
      card.plot = new uPlot({
        width: Math.max(260, card.root.clientWidth - 16), height: 200,
        scales: { x: { time: false }, y: card.log ? { distr: 3, log: 10,
          range: (u, min, max) => logRange(0.5, max) } : { range: (u, min, max) => [0, max ? max * 1.1 : 1] } },
        axes: [{ label: ch.channel }, { label: "counts", size: 64 }],
        series: [{}, { label: "counts", stroke: "#1f77b4", fill: "rgba(31,119,180,0.15)", width: 1,
          paths: uPlot.paths.stepped({ align: 1 }) }],
        legend: { show: false },
      }, [x, ys], card.body);
    } else {
      card.plot.setData([x, ys]);
    }
  }
}
