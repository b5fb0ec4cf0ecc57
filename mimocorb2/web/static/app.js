// The dashboard: one WebSocket for pushed frames, fixed actions by POST.
import { $, el, fmtNumber, fmtDuration, fmtBytes, fmtTime, getJSON, postAction } from "./util.js";
import { RatesChart } from "./rates.js";
import { ScopePanel, decodeScopeFrame } from "./scope.js";
import { HistogramPanels } from "./hist.js";
import { FlowGraph } from "./graph.js";
import { LogsPanel } from "./logs.js";

const ACTIVE = new Set(["starting", "running", "paused", "stopping"]);
// where a token comes from: the daemon's `mimoctl web`, or the terminal of a foreground run
const TOKEN_HELP = "open the address printed by `mimoctl web` (or by `mimocorb2 run --web`)";
const state = {
  role: null, ws: null, lastFrame: 0, status: null, setup: null, runKey: null,
  localPending: new Map(), scopes: new Map(), visible: new Set(), retry: 1000,
};
const rates = new RatesChart($("#rates-chart"));
const histograms = new HistogramPanels($("#histograms"));
const graph = new FlowGraph($("#graph"));
const logs = new LogsPanel($("#logs"));

// ---------------------------------------------------------------- session and socket
async function init() {
  let session;
  try {
    session = await getJSON("/api/session");
  } catch {
    $("#run-state").textContent = `no valid token: ${TOKEN_HELP}`;
    return;
  }
  state.role = session.role;
  $("#role").textContent = session.role;
  $("#version").textContent = `mimocorb2 ${session.version}`;
  if (session.role === "operator") setupControls(session.setups || [], session.can_start !== false);
  else $("#controls").remove(); // a viewer gets no buttons at all
  connect();
  setInterval(tickStaleness, 1000);
  document.addEventListener("visibilitychange", sendView);
}

function connect() {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  ws.binaryType = "arraybuffer";
  state.ws = ws;
  ws.addEventListener("open", () => {
    state.retry = 1000;
    document.body.dataset.connection = "open";
    sendView();
    rates.reload();
  });
  ws.addEventListener("message", (ev) => {
    state.lastFrame = Date.now();
    if (typeof ev.data !== "string") {
      const frame = decodeScopeFrame(ev.data);
      for (const panel of state.scopes.values()) if (panel.buffer === frame.buffer) panel.onFrame(frame);
      return;
    }
    const msg = JSON.parse(ev.data);
    if (msg.type === "status") onStatus(msg);
    else if (msg.type === "setup") onSetup(msg.setup);
    else if (msg.type === "histograms") histograms.update(msg.panels);
    else if (msg.type === "logs") logs.add(msg.lines, msg.dropped);
  });
  ws.addEventListener("close", async () => {
    document.body.dataset.connection = "closed";
    if (state.ws !== ws) return;
    // the daemon may be restarting: try again, and check that our cookie is still good
    setTimeout(async () => {
      try { await getJSON("/api/session"); } catch (e) {
        if (String(e).includes("401")) { $("#staleness").textContent = `token no longer valid: ${TOKEN_HELP} again`; }
      }
      connect();
    }, state.retry);
    state.retry = Math.min(state.retry * 2, 5000);
  });
}

function sendView() {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return;
  const hidden = document.visibilityState === "hidden";
  const scopes = hidden ? [] : [...new Set([...state.scopes.values()].filter((p) => state.visible.has(p.root)).map((p) => p.buffer))];
  state.ws.send(JSON.stringify({ type: "view", scopes, logs: !hidden, histograms: !hidden }));
}

const seen = new IntersectionObserver((entries) => {
  for (const e of entries) e.isIntersecting ? state.visible.add(e.target) : state.visible.delete(e.target);
  sendView();
});

function tickStaleness() {
  const s = $("#staleness");
  if (!state.lastFrame) return;
  const age = (Date.now() - state.lastFrame) / 1000;
  s.textContent = `last update ${age < 1.5 ? "just now" : Math.round(age) + " s ago"}` +
    (document.body.dataset.connection === "closed" ? " — reconnecting…" : "");
  s.classList.toggle("stale", age > 3);
  if (state.status) renderElapsed(state.status);
}

// ---------------------------------------------------------------- frames
function onSetup(setup) {
  state.setup = setup;
  graph.build(setup);
  for (const p of state.scopes.values()) { seen.unobserve(p.root); p.destroy(); }
  state.scopes.clear();
  const container = $("#scopes");
  container.replaceChildren();
  const add = $("#scope-add");
  add.replaceChildren(el("option", { value: "", text: "—" }));
  histograms.clear();
  if (!setup) { logs.setNames([]); return; }
  for (const [name, w] of Object.entries(setup.workers)) {
    if (w.function !== "observers.oscilloscope" || !w.observes.length) continue;
    const buffer = w.observes[0];
    addScope(name, buffer, w.config || {});
  }
  for (const b of Object.keys(setup.buffers)) add.append(el("option", { value: b, text: b }));
  add.onchange = () => { if (add.value) addScope(`buffer ${add.value}`, add.value, {}, true); add.value = ""; };
  logs.setNames(["daemon", ...Object.keys(setup.workers)]);
  sendView();
}

function addScope(title, buffer, config, closable = false) {
  const key = `${title}`;
  if (state.scopes.has(key)) return;
  const fields = state.setup.buffers[buffer] ? state.setup.buffers[buffer].fields : [];
  const panel = new ScopePanel($("#scopes"), title, buffer, fields, config, closable ? () => {
    seen.unobserve(panel.root); panel.destroy(); state.scopes.delete(key); state.visible.delete(panel.root); sendView();
  } : null);
  state.scopes.set(key, panel);
  seen.observe(panel.root);
}

function onStatus(msg) {
  const status = msg.status;
  state.status = status;
  if (msg.web.run_key !== state.runKey) {
    const first = state.runKey === null;
    state.runKey = msg.web.run_key;
    if (!first) rates.reload();
  }
  renderRunBox(status, msg.web);
  renderAlarms(status.alarms || []);
  renderBuffers(status);
  renderWorkers(status, msg.web);
  graph.update(status);
  rates.push(msg.point);
  renderControls(status);
}

function renderRunBox(status, web) {
  const run = status.run || {};
  const box = $("#runbox");
  box.dataset.state = status.state;
  $("#run-state").textContent = status.state;
  $("#run-setup").textContent = run.setup ? run.setup.split("/").slice(-2).join("/") : "";
  $("#run-dir").textContent = run.directory || "";
  $("#run-start").textContent = run.started_at ? `started ${fmtTime(run.started_at)}` : "";
  $("#run-reason").textContent = run.stop_reason ? `reason: ${run.stop_reason}` : (run.error ? `error: ${run.error}` : "");
  // pending transitions: the daemon's list, plus what this page has sent and not yet heard back about
  const pending = new Map();
  for (const p of web.pending) pending.set(p.verb, p.requested_at);
  for (const [verb, t] of state.localPending) if (!pending.has(verb)) pending.set(verb, t);
  const el_ = $("#run-pending");
  el_.hidden = pending.size === 0;
  el_.textContent = [...pending].map(([verb, t]) => `${verb} requested ${fmtTime(t)} …`).join("  ");
  renderElapsed(status);
}

function renderElapsed(status) {
  const run = status.run;
  if (!run || !run.started_at) { $("#run-elapsed").textContent = ""; return; }
  const end = run.ended_at || Date.now() / 1000;
  $("#run-elapsed").textContent = `elapsed ${fmtDuration(end - run.started_at)}`;
}

function renderAlarms(alarms) {
  const box = $("#alarms");
  box.hidden = alarms.length === 0;
  box.replaceChildren(...alarms.map((a) => el("div", {
    class: `alarm ${a.severity}${a.acknowledged ? " acked" : ""}`, "data-alarm": a.id },
    el("strong", { text: a.severity.toUpperCase() }), ` ${a.message} `,
    el("span", { class: "muted", text: `since ${fmtTime(a.since)}` }),
    state.role === "operator" && !a.acknowledged ? el("button", { type: "button", text: "Acknowledge",
      onclick: () => act("ack", { alarm: a.id }) }) : (a.acknowledged ? el("span", { class: "muted", text: " (acknowledged)" }) : null))));
}

// fill bar: slots holding events not yet read (dark), slots being written or read (light), empty
function fillBar(b, slots) {
  const used = Math.round(100 * (b.filled_slots || 0));
  const waiting = slots ? Math.min(used, Math.round((100 * (b.pending || 0)) / slots)) : 0;
  return el("div", { class: `fill${b.ended ? " ended" : ""}`,
    title: `${waiting}% filled, ${used - waiting}% being worked on, ${100 - used}% empty (${slots} slots)` },
    el("div", { class: "bar", "data-pct": waiting }), el("div", { class: "bar working", "data-pct": used - waiting }));
}

function renderBuffers(status) {
  const tbody = $("#buffers tbody");
  const rows = [];
  for (const [name, b] of Object.entries(status.buffers || {})) {
    const spec = state.setup && state.setup.buffers[name];
    const slots = spec ? spec.slot_count : "";
    const mbps = spec ? ((b.rate || 0) * spec.event_bytes) / 1e6 : null;
    const bar = fillBar(b, slots);
    const tr = el("tr", { "data-buffer": name, class: b.root ? "root" : "" },
      el("td", {}, name, b.root ? el("span", { class: "tag", text: "root" }) : null),
      el("td", { "data-key": "event_count", text: String(b.event_count) }),
      el("td", { "data-key": "rate", text: fmtNumber(b.rate) }),
      el("td", { "data-key": "mbps", text: mbps === null ? "–" : mbps.toFixed(2) }),
      el("td", { "data-key": "filled_slots" }, bar, ` ${Math.round(100 * (b.filled_slots || 0))}%`),
      el("td", { "data-key": "slots", text: String(slots) }),
      el("td", { "data-key": "average_deadtime", text: `${(100 * (b.average_deadtime || 0)).toFixed(1)}%` }),
      el("td", { "data-key": "paused_count", text: String(b.paused_count) + (b.paused ? " (paused)" : "") }),
      el("td", { "data-key": "lost", text: String(b.lost) }),
      el("td", { "data-key": "redelivered", text: String(b.redelivered) }),
      el("td", { "data-key": "ended", text: b.ended ? "yes" : "" }));
    rows.push(tr);
  }
  tbody.replaceChildren(...rows);
  // bar widths through the CSSOM (the CSP forbids style attributes)
  for (const bar of tbody.querySelectorAll(".bar")) bar.style.width = `${bar.dataset.pct}%`;
}

function renderWorkers(status, web) {
  const tbody = $("#workers tbody");
  const memory = web.memory || {};
  const rows = Object.entries(status.workers || {}).map(([name, w]) => {
    const procs = w.processes || [];
    const ages = procs.filter((p) => p.alive && p.heartbeat_age != null).map((p) => p.heartbeat_age);
    const cpu = procs.reduce((s, p) => s + (p.cpu || 0), 0);
    const mem = procs.reduce((s, p) => s + (memory[String(p.pid)] && p.alive ? memory[String(p.pid)] : 0), 0);
    const loading = procs.map((p) => p.loading).find((text) => text); // "importing funcs.py for 12 s"
    return el("tr", { "data-worker": name, "data-state": w.state },
      el("td", { text: name }),
      el("td", { "data-key": "alive", text: `${w.alive}/${w.configured}` }),
      el("td", { "data-key": "state", class: `st ${w.state}`, text: loading ? `${w.state}: ${loading}` : w.state }),
      el("td", { "data-key": "restarts", text: String(w.restarts) }),
      el("td", { "data-key": "last_exit", text: w.last_exit || "" }),
      el("td", { text: ages.length ? `${Math.max(...ages).toFixed(1)} s` : "–" }),
      el("td", { text: `${cpu.toFixed(0)}%` }),
      el("td", { text: mem ? fmtBytes(mem) : "–" }),
      el("td", { "data-key": "device", text: w.device_summary || "" }));
  });
  tbody.replaceChildren(...rows);
  const d = status.daemon || {};
  const lag = d.loop_lag_recent_max == null ? "" :
    `, loop lag ${(d.loop_lag_recent_max * 1000).toFixed(1)} ms` +
    (d.loop_priority === "realtime" ? " (realtime loop)" : "");
  $("#daemon-self").textContent = `${d.foreground ? "mimocorb2 run" : "daemon"} pid ${d.pid}: CPU ${web.daemon_cpu}%, ` +
    `memory ${fmtBytes(memory[String(d.pid)])}${lag}`;
}

// ---------------------------------------------------------------- controls (operator only)
function setupControls(setups, canStart) {
  $("#controls").hidden = false;
  if (canStart) {
    const sel = $("#setup-select");
    sel.replaceChildren(...setups.map((s) => el("option", { value: s, text: s.split("/").slice(-2).join("/") })));
    if (!setups.length) sel.append(el("option", { value: "", text: "(no setups configured)" }));
    $("#btn-start").addEventListener("click", () => act("start", { setup: sel.value, comment: $("#run-comment").value || undefined }));
  } else { // a foreground run (mimocorb2 run --web): the page serves that one run
    $("#setup-select").closest("label").remove();
    $("#run-comment").closest("label").remove();
    $("#btn-start").remove();
  }
  $("#btn-pause").addEventListener("click", () => act("pause"));
  $("#btn-resume").addEventListener("click", () => act("resume"));
  $("#btn-stop").addEventListener("click", () => act("stop"));
  $("#btn-abort").addEventListener("click", () => { $("#abort-confirm").hidden = false; });
  $("#btn-abort-cancel").addEventListener("click", () => { $("#abort-confirm").hidden = true; });
  $("#btn-abort-confirm").addEventListener("click", () => { $("#abort-confirm").hidden = true; act("abort", { confirm: true }); });
}

function renderControls(status) {
  if (state.role !== "operator") return;
  const s = status.state, active = ACTIVE.has(s);
  const start = $("#btn-start");
  if (start) start.disabled = active || !$("#setup-select").value;
  $("#btn-pause").disabled = s !== "running";
  $("#btn-resume").disabled = s !== "paused";
  $("#btn-stop").disabled = !(s === "running" || s === "paused" || s === "starting");
  $("#btn-abort").disabled = !active;
}

async function act(verb, body = {}) {
  $("#action-error").textContent = "";
  if (verb !== "ack") {
    state.localPending.set(verb, Date.now() / 1000);
    if (state.status) renderRunBox(state.status, { pending: [] });
  }
  const reply = await postAction(verb, body);
  state.localPending.delete(verb);
  if (!reply.ok) {
    $("#action-error").textContent = `${verb}: ${reply.error}` + (reply.problems && reply.problems.length ? ` (${reply.problems.join("; ")})` : "");
  }
  if (verb === "start" && reply.ok) $("#run-comment").value = "";
}

init();
