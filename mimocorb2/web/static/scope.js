// Oscilloscope panels: frames are binary WebSocket messages (see mimocorb2/web/_panels.py).
import { el, PALETTE } from "./util.js";

export function decodeScopeFrame(buf) {
  const view = new DataView(buf);
  const n = view.getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 4, n)));
  let offset = 4 + n + ((4 - ((4 + n) % 4)) % 4);
  header.data = {};
  for (const ch of header.channels) {
    header.data[ch] = new Float32Array(buf.slice(offset, offset + 4 * header.length));
    offset += 4 * header.length;
  }
  return header;
}

function scaling(value, fallback) {
  return Array.isArray(value) && value.length === 3 ? value : fallback;
}

// One panel: config as for observers.oscilloscope (channels, ylim, t_scaling, y_scaling, trigger_level, update_interval)
export class ScopePanel {
  constructor(container, title, buffer, fields, config = {}, onClose = null) {
    this.buffer = buffer;
    this.config = config;
    const channels = Array.isArray(config.channels) && config.channels.length ? config.channels : fields;
    this.channels = channels.filter((c) => fields.includes(c));
    this.shown = new Set(this.channels);
    [this.tScale, this.tOffset, this.tUnit] = scaling(config.t_scaling, [1, 0, "Samples"]);
    [this.yScale, this.yOffset, this.yUnit] = scaling(config.y_scaling, [1, 0, "Value"]);
    this.ylim = Array.isArray(config.ylim) && config.ylim.length === 2 ? config.ylim : null;
    this.trigger = typeof config.trigger_level === "number" ? config.trigger_level * this.yScale + this.yOffset : null;
    this.interval = Math.max(0.1, Number(config.update_interval) || 1) * 1000;
    this.frozen = false;
    this.autoscale = this.ylim === null;
    this.lastDraw = 0;
    this.frames = 0;
    this.plot = null;
    this.length = 0;

    const toggles = this.channels.map((ch) => {
      const box = el("input", { type: "checkbox", checked: true, "data-channel": ch });
      box.addEventListener("change", () => { box.checked ? this.shown.add(ch) : this.shown.delete(ch); this.applyShown(); });
      return el("label", { class: "toggle" }, box, ch);
    });
    this.freezeBtn = el("button", { type: "button", text: "Freeze", onclick: () => this.toggleFreeze() });
    this.autoBtn = el("button", { type: "button", text: "Autoscale", class: this.autoscale ? "on" : "",
      onclick: () => this.toggleAutoscale() });
    this.info = el("span", { class: "muted", text: "waiting for data" });
    this.body = el("div", { class: "chart" });
    const closeBtn = onClose ? el("button", { type: "button", text: "×", title: "close", onclick: onClose }) : null;
    this.root = el("div", { class: "card scope", "data-buffer": buffer, "data-frames": "0" },
      el("h3", {}, `${title} `, el("span", { class: "muted", text: `(${buffer})` }), closeBtn),
      el("div", { class: "tools" }, ...toggles, this.freezeBtn, this.autoBtn, this.info),
      this.body);
    container.append(this.root);
  }

  build(length) {
    this.length = length;
    if (this.plot) this.plot.destroy();
    const x = Array.from({ length }, (_, i) => i * this.tScale + this.tOffset);
    const series = [{ label: this.tUnit }, ...this.channels.map((ch, i) => ({
      label: ch, stroke: PALETTE[i % PALETTE.length], width: 1, show: this.shown.has(ch) }))];
    if (this.trigger !== null) series.push({ label: "trigger", stroke: "#888", dash: [4, 4], width: 1 });
    const opts = {
      width: Math.max(280, this.root.clientWidth - 16), height: 220,
      scales: { x: { time: false }, y: { auto: this.autoscale, range: this.autoscale ? undefined : this.ylim } },
      axes: [{ label: this.tUnit }, { label: this.yUnit, size: 64 }],
      series, legend: { show: true },
    };
    this.data = [x, ...this.channels.map(() => new Array(length).fill(null))];
    if (this.trigger !== null) this.data.push(new Array(length).fill(this.trigger));
    this.plot = new uPlot(opts, this.data, this.body);
  }

  applyShown() {
    if (!this.plot) return;
    this.channels.forEach((ch, i) => this.plot.setSeries(i + 1, { show: this.shown.has(ch) }));
  }

  toggleFreeze() {
    this.frozen = !this.frozen;
    this.freezeBtn.classList.toggle("on", this.frozen);
    this.freezeBtn.textContent = this.frozen ? "Frozen" : "Freeze";
    this.root.dataset.frozen = String(this.frozen);
  }

  toggleAutoscale() {
    this.autoscale = !this.autoscale;
    this.autoBtn.classList.toggle("on", this.autoscale);
    if (this.length) this.build(this.length);
  }

  onFrame(frame) {
    if (this.frozen) return;
    const now = performance.now();
    if (now - this.lastDraw < 0.8 * this.interval) return; // the worker's update_interval (frames come at it, with jitter)
    this.lastDraw = now;
    if (!this.plot || frame.length !== this.length) this.build(frame.length);
    let max = -Infinity;
    this.channels.forEach((ch, i) => {
      const raw = frame.data[ch];
      if (!raw) return;
      const ys = new Array(raw.length);
      for (let k = 0; k < raw.length; k++) {
        ys[k] = raw[k] * this.yScale + this.yOffset;
        if (this.shown.has(ch) && ys[k] > max) max = ys[k];
      }
      this.data[i + 1] = ys;
    });
    this.plot.setData(this.data);
    this.frames += 1;
    this.root.dataset.frames = String(this.frames);
    this.root.dataset.max = Number.isFinite(max) ? max.toPrecision(6) : "";
    this.info.textContent = `event ${frame.counter}`;
  }

  destroy() { if (this.plot) this.plot.destroy(); this.root.remove(); }
}
