// Logs panel: live tail (pushed), filter by log and level, bounded, older lines on demand.
import { $, el, getJSON } from "./util.js";

const MAX_LINES = 2000;
const LEVELS = ["debug", "info", "warning", "error", "critical"];

export class LogsPanel {
  constructor(root) {
    this.root = root;
    this.lines = [];
    this.names = new Set();
    this.nameSel = $("#log-name");
    this.levelSel = $("#log-level");
    this.nameSel.addEventListener("change", () => this.render());
    this.levelSel.addEventListener("change", () => this.render());
    $("#log-older").addEventListener("click", () => this.loadOlder());
    this.download = $("#log-download");
  }

  setNames(names) {
    this.nameSel.replaceChildren(el("option", { value: "", text: "all" }), ...names.map((n) => el("option", { value: n, text: n })));
    this.names = new Set(names);
    this.lines = [];
    this.render();
  }

  add(lines, dropped) {
    if (dropped) this.lines.push({ name: "", offset: -1, level: "warning", text: `… ${dropped} lines skipped (page too slow)` });
    this.lines.push(...lines);
    if (this.lines.length > MAX_LINES) this.lines.splice(0, this.lines.length - MAX_LINES);
    this.render();
  }

  visible() {
    const name = this.nameSel.value, min = LEVELS.indexOf(this.levelSel.value);
    return this.lines.filter((l) => (!name || l.name === name) && LEVELS.indexOf(l.level) >= min);
  }

  render() {
    const name = this.nameSel.value || "daemon";
    this.download.href = `/api/logs/${encodeURIComponent(name)}/download`;
    const atBottom = this.root.scrollTop + this.root.clientHeight >= this.root.scrollHeight - 20;
    this.root.replaceChildren(...this.visible().slice(-600).map((l) =>
      el("div", { class: `line ${l.level}` }, l.name ? el("span", { class: "src", text: l.name }) : null, l.text)));
    if (atBottom) this.root.scrollTop = this.root.scrollHeight;
  }

  async loadOlder() {
    const name = this.nameSel.value || "daemon";
    const mine = this.lines.filter((l) => l.name === name && l.offset >= 0);
    const before = mine.length ? Math.min(...mine.map((l) => l.offset)) : 1e15;
    let chunk;
    try { chunk = await getJSON(`/api/logs?name=${encodeURIComponent(name)}&before=${Math.floor(before)}`); } catch { return; }
    this.lines.unshift(...chunk.lines);
    if (this.lines.length > MAX_LINES * 2) this.lines.length = MAX_LINES * 2;
    this.render();
  }
}
