// Logs panel: live tail (pushed), filter by log and level, bounded, older lines on demand.
import { $, el, getJSON } from "./util.js";

const MAX_LINES = 2000;  // live lines kept (all logs)
const LIVE_SHOWN = 600;  // of them, at most this many in the DOM while following the log
const MAX_OLDER = 2000;  // lines "Load older" brought from one log's file; shown above all live lines
const LEVELS = ["debug", "info", "warning", "error", "critical"];

export class LogsPanel {
  constructor(root) {
    this.root = root;
    this.lines = [];
    this.names = new Set();
    this.nameSel = $("#log-name");
    this.levelSel = $("#log-level");
    this.older = [];  // from the file of log olderName, oldest first, all before the live lines
    this.olderName = "";
    this.expanded = false;  // after "Load older": every kept line is shown, not only the newest
    this.seen = new Map();  // log name -> offset of its newest line here (the recent lines come again on a view change)
    this.nameSel.addEventListener("change", () => { this.older = []; this.expanded = false; this.render(); });
    this.levelSel.addEventListener("change", () => this.render());
    $("#log-older").addEventListener("click", () => this.loadOlder());
    this.download = $("#log-download");
  }

  setNames(names) {
    const chosen = this.nameSel.value;  // a setup frame again (reconnect, new run): keep the user's choice
    this.nameSel.replaceChildren(el("option", { value: "", text: "all" }), ...names.map((n) => el("option", { value: n, text: n })));
    if (names.includes(chosen)) this.nameSel.value = chosen;
    this.names = new Set(names);
    this.lines = [];
    this.older = [];
    this.expanded = false;
    this.seen = new Map();
    this.render();
  }

  add(lines, dropped) {
    if (dropped) this.lines.push({ name: "", offset: -1, level: "warning", text: `… ${dropped} lines skipped (page too slow)` });
    for (const l of lines) {
      if (l.offset >= 0) {
        if (l.offset <= (this.seen.get(l.name) ?? -1)) continue;  // already here
        this.seen.set(l.name, l.offset);
      }
      this.lines.push(l);
    }
    if (this.lines.length > MAX_LINES) {
      const gone = this.lines.splice(0, this.lines.length - MAX_LINES);
      if (this.expanded) {  // loaded lines stay joined to the live ones: the trimmed go below them
        this.older.push(...gone.filter((l) => l.name === this.olderName));
        if (this.older.length > MAX_OLDER) this.older.splice(0, this.older.length - MAX_OLDER);
      }
    }
    this.render();
  }

  visible(lines) {
    const name = this.nameSel.value, min = LEVELS.indexOf(this.levelSel.value);
    return lines.filter((l) => (!name || l.name === name) && LEVELS.indexOf(l.level) >= min);
  }

  render() {
    const name = this.nameSel.value || "daemon";
    this.download.href = `/api/logs/${encodeURIComponent(name)}/download`;
    const atBottom = this.root.scrollTop + this.root.clientHeight >= this.root.scrollHeight - 20;
    // following the log: the newest LIVE_SHOWN; after "Load older": the loaded lines and every
    // live line after them, so that nothing between them is hidden
    const live = this.visible(this.lines);
    const shown = this.expanded ? [...this.visible(this.older), ...live] : live.slice(-LIVE_SHOWN);
    this.root.replaceChildren(...shown.map((l) =>
      el("div", { class: `line ${l.level}` }, l.name ? el("span", { class: "src", text: l.name }) : null, l.text)));
    if (atBottom) this.root.scrollTop = this.root.scrollHeight;
  }

  // The lines of the shown log (daemon for "all") just before the oldest one the page has, from its
  // file; shown above the live lines. Beyond MAX_OLDER the newest loaded lines give way (a marker
  // says so: the download has everything).
  async loadOlder() {
    const name = this.nameSel.value || "daemon";
    if (name !== this.olderName) { this.older = []; this.olderName = name; }
    const have = [...this.older, ...this.lines].filter((l) => l.name === name && l.offset >= 0);
    const before = have.length ? Math.min(...have.map((l) => l.offset)) : 1e15;
    let chunk;
    try { chunk = await getJSON(`/api/logs?name=${encodeURIComponent(name)}&before=${Math.floor(before)}`); } catch { return; }
    this.expanded = true;
    this.older = [...chunk.lines, ...this.older];
    if (this.older.length > MAX_OLDER) {
      const cut = this.older.length - MAX_OLDER;
      this.older.splice(MAX_OLDER - 1);
      this.older.push({ name, offset: -1, level: "warning", text: `… ${cut + 1} newer lines not shown (Download has them all)` });
    }
    this.render();
    this.root.scrollTop = 0;  // the loaded lines are at the top
  }
}
