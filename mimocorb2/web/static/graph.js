// Data-flow graph: buffers and workers as the setup wires them, in layers, as SVG.
import { fmtNumber } from "./util.js";

const NS = "http://www.w3.org/2000/svg";
const svgEl = (tag, attrs = {}, text = null) => {
  const n = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  if (text !== null) n.textContent = text;
  return n;
};

// rank: importers 0, a buffer one after its writers, a worker one after what it reads
function ranks(setup) {
  const rank = {};
  const nodes = [...Object.keys(setup.workers).map((w) => `w:${w}`), ...Object.keys(setup.buffers).map((b) => `b:${b}`)];
  nodes.forEach((n) => (rank[n] = 0));
  for (let pass = 0; pass < nodes.length; pass++) {
    let changed = false;
    for (const [name, w] of Object.entries(setup.workers)) {
      const r = Math.max(0, ...[...w.sources, ...w.observes].map((b) => rank[`b:${b}`] + 1));
      if (r > rank[`w:${name}`] && r < 50) { rank[`w:${name}`] = r; changed = true; }
      for (const b of w.sinks) {
        if (rank[`w:${name}`] + 1 > rank[`b:${b}`] && rank[`w:${name}`] < 50) { rank[`b:${b}`] = rank[`w:${name}`] + 1; changed = true; }
      }
    }
    if (!changed) break;
  }
  return rank;
}

export class FlowGraph {
  constructor(root) { this.root = root; this.nodes = new Map(); }

  build(setup) {
    this.root.replaceChildren();
    this.nodes.clear();
    if (!setup) return;
    const rank = ranks(setup);
    const columns = new Map();
    for (const [node, r] of Object.entries(rank)) {
      if (!columns.has(r)) columns.set(r, []);
      columns.get(r).push(node);
    }
    const W = 150, H = 46, pos = {};
    let rows = 0;
    for (const [r, list] of columns) { list.forEach((n, i) => (pos[n] = [20 + r * W, 20 + i * H])); rows = Math.max(rows, list.length); }
    const width = 40 + (Math.max(...columns.keys()) + 1) * W, height = 30 + rows * H;
    const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, width, height, preserveAspectRatio: "xMinYMin meet", role: "img", "aria-label": "data flow" });
    const defs = svgEl("defs");
    const marker = svgEl("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "6", markerHeight: "6", orient: "auto" });
    marker.append(svgEl("path", { d: "M0,0 L10,5 L0,10 z", fill: "#777" }));
    defs.append(marker);
    svg.append(defs);
    const edge = (a, b, dashed) => {
      const [x1, y1] = pos[a], [x2, y2] = pos[b];
      svg.append(svgEl("line", { x1: x1 + 110, y1: y1 + 14, x2: x2, y2: y2 + 14, class: dashed ? "edge observe" : "edge", "marker-end": "url(#arrow)" }));
    };
    for (const [name, w] of Object.entries(setup.workers)) {
      w.sources.forEach((b) => edge(`b:${b}`, `w:${name}`, false));
      w.observes.forEach((b) => edge(`b:${b}`, `w:${name}`, true));
      w.sinks.forEach((b) => edge(`w:${name}`, `b:${b}`, false));
    }
    for (const node of Object.keys(rank)) {
      const [x, y] = pos[node];
      const isBuffer = node.startsWith("b:");
      const name = node.slice(2);
      const g = svgEl("g", { class: isBuffer ? "node buffer" : "node worker", "data-name": name });
      g.append(svgEl("rect", { x, y, width: 110, height: 28, rx: isBuffer ? 2 : 12 }));
      g.append(svgEl("text", { x: x + 55, y: y + 12, "text-anchor": "middle" }, name.length > 16 ? name.slice(0, 15) + "…" : name));
      const sub = svgEl("text", { x: x + 55, y: y + 24, "text-anchor": "middle", class: "sub" }, isBuffer ? "" : setup.workers[name].function);
      g.append(sub);
      g.append(svgEl("title", {}, name));
      svg.append(g);
      this.nodes.set(node, { g, sub });
    }
    this.root.append(svg);
  }

  update(status) {
    for (const [name, b] of Object.entries(status.buffers || {})) {
      const n = this.nodes.get(`b:${name}`);
      if (!n) continue;
      const state = b.ended ? "ended" : b.paused ? "paused" : b.rate > 0 ? "flowing" : "idle";
      n.g.dataset.state = state;
      n.sub.textContent = `${fmtNumber(b.rate)}/s  ${Math.round(100 * (b.filled_slots || 0))}%`;
    }
    for (const [name, w] of Object.entries(status.workers || {})) {
      const n = this.nodes.get(`w:${name}`);
      if (n) n.g.dataset.state = w.state;
    }
  }
}
