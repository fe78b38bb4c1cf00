// api.js — the page's only way to the server: URLs, JSON fetches that turn {"error": ...}
// answers into Error messages, and small DOM helpers.

// A server with a token was opened as /?token=T: the answer to that request set an HttpOnly,
// SameSite=Strict cookie (server/security.py), which every later request carries. So the token
// leaves the address bar and the history entry here, and is never put in a URL again.
{
  const here = new URL(location.href);
  if (here.searchParams.has("token")) {
    here.searchParams.delete("token");
    history.replaceState(history.state, "", here.pathname + here.search + here.hash);
  }
}

/** An API URL with query parameters (undefined/null values left out). */
export function url(path, params = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null) q.set(k, String(v));
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

export function runPath(run, rest = "") {
  return `/api/runs/${encodeURIComponent(run)}${rest}`;
}

async function answer(res) {
  let body = null;
  try { body = await res.json(); } catch { body = null; }
  if (!res.ok) throw new Error((body && body.error) || `${res.status} ${res.statusText}`);
  return body;
}

export async function getJSON(path, params) {
  return answer(await fetch(url(path, params)));
}

export async function postJSON(path, body) {
  return answer(await fetch(url(path), {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  }));
}

export async function postForm(path, form) {
  return answer(await fetch(url(path), { method: "POST", body: form }));
}

/** Poll a request for the trainer (GET `path`: pending | done | failed) every `everyMs` until it
 *  is answered: the answer (done or failed), null once `current()` turns false (a newer request
 *  took over), an Error saying `late` after `giveUpMs`. */
export async function awaitAnswer(path, { everyMs, giveUpMs, late, current = () => true }) {
  const t0 = performance.now();
  while (current()) {
    const r = await getJSON(path);
    if (r.status !== "pending") return r;
    if (performance.now() - t0 > giveUpMs) throw new Error(late);
    await new Promise((ok) => setTimeout(ok, everyMs));
  }
  return null;
}

export function events(run) { return new EventSource(url(runPath(run, "/events"))); }

// ---- DOM ------------------------------------------------------------------------------------
export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

/** el("div.a.b", {attr: v}, child, "text", ...) */
export function el(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const e = document.createElement(tag || "div");
  if (classes.length) e.className = classes.join(" ");
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "style") e.style.cssText = v; // CSSOM: a style attribute would break the CSP
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}

/** A one-line message at the bottom right (errors stay 8 s, infos 4 s). Never console.error. */
export function say(text, kind = "error") {
  const box = $("#messages");
  const m = el(`div.msg.${kind}`, { text });
  box.append(m);
  setTimeout(() => m.remove(), kind === "error" ? 8000 : 4000);
}

// ---- numbers --------------------------------------------------------------------------------
export function fmt(v, digits = 4) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (typeof v !== "number") return String(v);
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(2);
  return Number(v.toPrecision(digits)).toString();
}
export const pct = (v) => (v === null || v === undefined || Number.isNaN(v) ? "–" : `${(100 * v).toFixed(1)}%`);
export const int = (v) => (v === null || v === undefined ? "–" : Math.round(v).toLocaleString("en-US"));

/** Set an <img> to a new URL without flicker: load it aside, then swap (only the newest wins). */
export function setImage(img, src) {
  if (img.dataset.want === src) return;
  img.dataset.want = src;
  if (!img.getAttribute("src")) { img.src = src; return; }
  const pre = new Image();
  pre.onload = () => { if (img.dataset.want === src) img.src = src; };
  pre.onerror = () => { if (img.dataset.want === src) img.src = src; };
  pre.src = src;
}
