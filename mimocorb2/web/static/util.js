// Small helpers shared by the panels.
export const $ = (sel, root = document) => root.querySelector(sel);

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

export function fmtNumber(v, digits = 1) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (a >= 1e6) return (v / 1e6).toFixed(digits) + "M";
  if (a >= 1e4) return (v / 1e3).toFixed(digits) + "k";
  if (Number.isInteger(v)) return String(v);
  return v.toFixed(digits);
}

export function fmtDuration(s) {
  if (s === null || s === undefined) return "–";
  s = Math.max(0, Math.floor(s));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return `${h}:${String(m).padStart(2, "0")}:${String(sec).padStart(2, "0")}`;
}

export function fmtBytes(b) {
  if (!b && b !== 0) return "–";
  if (b >= 2 ** 30) return (b / 2 ** 30).toFixed(1) + " GiB";
  if (b >= 2 ** 20) return (b / 2 ** 20).toFixed(0) + " MiB";
  return (b / 1024).toFixed(0) + " KiB";
}

export function fmtTime(epoch) {
  if (!epoch) return "–";
  return new Date(epoch * 1000).toLocaleTimeString();
}

// fetch JSON from our own API (the cookie goes along: same origin)
export async function getJSON(url) {
  const r = await fetch(url, { credentials: "same-origin", cache: "no-store" });
  if (!r.ok) throw new Error(`${url}: ${r.status} ${await r.text()}`);
  return r.json();
}

// an action: POST with the custom header the server requires
export async function postAction(verb, body = {}) {
  const r = await fetch(`/api/action/${verb}`, {
    method: "POST", credentials: "same-origin", cache: "no-store",
    headers: { "Content-Type": "application/json", "X-Mimocorb2-Action": "1" },
    body: JSON.stringify(body),
  });
  let data = {};
  try { data = await r.json(); } catch { data = { ok: false, error: `${r.status} ${r.statusText}` }; }
  if (!r.ok && !data.error) data.error = `${r.status} ${r.statusText}`;
  return data;
}

export const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
  "#17becf", "#7f7f7f", "#bcbd22"];
