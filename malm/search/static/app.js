// malm serve: upload a photo, list the index's top-k recipes, draw attention maps on request.
// Every string from the server goes into the page with textContent (never innerHTML).
"use strict";

const $ = (id) => document.getElementById(id);
let info = null;          // /api/info
let seq = 0;              // the latest upload; answers to older ones are dropped
let attnSeq = 0;
let attnUrl = null;
let previewUrl = null;

function show(el, on) { el.hidden = !on; }
function fmtSize(bytes) {
  if (bytes < 1024) return bytes + " bytes";
  if (bytes < 1048576) return (bytes / 1024).toFixed(1) + " KB";
  return (bytes / 1048576).toFixed(1) + " MB";
}

function setError(msg) {
  const e = $("error");
  e.textContent = msg || "";
  show(e, !!msg);
}

async function readError(resp) {
  try {
    const body = await resp.json();
    if (body && body.error) return body.error;
  } catch (_) { /* not JSON */ }
  return "the server answered " + resp.status + " " + (resp.statusText || "");
}

async function loadInfo() {
  try {
    const r = await fetch("/api/info");
    if (!r.ok) throw new Error(await readError(r));
    info = await r.json();
    const bits = [info.recipes + " recipes", "index " + info.index, "run " + info.run + " (" + info.variant +
                  ", epoch " + info.checkpoint_epoch + ")", "top " + info.k];
    if (info.rerank) bits.push("re-ranked top " + info.rerank + " by the matching module");
    $("info").textContent = bits.join(" \u00b7 ");
    $("limit").textContent = "JPEG, PNG, WebP, \u2026 up to " + info.max_upload_mb + " MB";
    if (!info.attention && info.attention_note) {
      $("attention-note").textContent = "No attention maps: " + info.attention_note + ".";
      show($("attention-note"), true);
    }
  } catch (err) {
    $("info").textContent = "cannot reach the server: " + err.message;
  }
}

function clearResults() {
  $("results").replaceChildren();
  show($("results-title"), false);
  show($("attention"), false);
}

async function upload(file) {
  const mine = ++seq;
  setError("");
  clearResults();
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = URL.createObjectURL(file);
  const img = $("preview");
  show(img, false);  // shown once the browser can draw it (a broken file only gets its name)
  img.onload = () => show(img, true);
  img.src = previewUrl;
  $("preview-name").textContent = file.name + " (" + fmtSize(file.size) + ")";
  show($("preview-box"), true);
  if (info && file.size > info.max_upload_bytes) {
    $("status").textContent = "";
    setError("This photo is " + fmtSize(file.size) + "; this server accepts photos up to " +
             info.max_upload_mb + " MB (malm serve --max-upload-mb).");
    return;
  }
  $("status").textContent = "searching\u2026";
  const form = new FormData();
  form.append("photo", file, "photo");
  let resp;
  const t0 = performance.now();
  try {
    resp = await fetch("/api/search", { method: "POST", body: form });
  } catch (err) {
    if (mine !== seq) return;
    $("status").textContent = "";
    setError("The upload failed (" + err.message + "). A photo over the size limit is refused by the server.");
    return;
  }
  if (mine !== seq) return;
  if (!resp.ok) {
    const msg = await readError(resp);
    if (mine !== seq) return;
    $("status").textContent = "";
    setError(msg);
    return;
  }
  const data = await resp.json();
  if (mine !== seq) return;
  const ms = Math.round(performance.now() - t0);
  $("status").textContent = data.hits.length + " results in " + ms + " ms (model " + Math.round(data.ms) + " ms)";
  $("status").dataset.ms = String(ms);
  render(data);
}

function render(data) {
  const ol = $("results");
  let first = null;
  for (const h of data.hits) {
    const li = document.createElement("li");
    li.className = "hit";
    li.dataset.id = h.id;
    const head = document.createElement("div");
    head.className = "hit-head";
    const title = document.createElement("span");
    title.className = "hit-title";
    const rank = document.createElement("span");
    rank.className = "rank";
    rank.textContent = h.rank + ".";
    const name = document.createElement("span");
    name.className = "title";
    name.textContent = h.title || "(untitled)";
    title.append(rank, name);
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = "cos " + h.score.toFixed(4) +
      (h.match_score === null || h.match_score === undefined ? "" : " \u00b7 match " + h.match_score.toFixed(4));
    head.append(title, score);
    li.append(head);
    const ul = document.createElement("ul");
    ul.className = "ingredients";
    for (const ing of h.ingredients) {
      const item = document.createElement("li");
      if (data.attention && ing.line !== null && data.photo) {
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = ing.text;
        b.title = "show where the model looks for this line";
        b.addEventListener("click", () => showAttention(data.photo, h, ing, b));
        item.append(b);
        if (!first) first = [h, ing, b];
      } else {
        const s = document.createElement("span");
        s.className = "plain";
        s.textContent = ing.text;
        item.append(s);
      }
      ul.append(item);
    }
    li.append(ul);
    ol.append(li);
  }
  show($("results-title"), data.hits.length > 0);
  if (first) showAttention(data.photo, ...first);
}

async function showAttention(photo, hit, ing, button) {
  const mine = ++attnSeq;
  document.querySelectorAll(".ingredients button.chosen").forEach((b) => b.classList.remove("chosen"));
  button.classList.add("chosen");
  $("attention-what").textContent = "\u201c" + ing.text + "\u201d of " + hit.rank + ". " + hit.title;
  const err = $("attention-error");
  show(err, false);
  show($("attention"), true);
  const q = new URLSearchParams({ photo: photo, row: String(hit.row), line: String(ing.line) });
  let resp;
  try {
    resp = await fetch("/api/attention?" + q.toString());
  } catch (e) {
    if (mine !== attnSeq) return;
    err.textContent = "cannot reach the server: " + e.message;
    show(err, true);
    return;
  }
  if (mine !== attnSeq) return;
  if (!resp.ok) {
    err.textContent = await readError(resp);
    show(err, true);
    $("attention-img").removeAttribute("src");
    return;
  }
  const blob = await resp.blob();
  if (mine !== attnSeq) return;
  if (attnUrl) URL.revokeObjectURL(attnUrl);
  attnUrl = URL.createObjectURL(blob);
  const img = $("attention-img");
  img.onload = () => { img.dataset.loaded = String(mine); };
  img.src = attnUrl;
}

function setup() {
  const input = $("photo-input");
  input.addEventListener("change", () => {
    if (input.files && input.files[0]) upload(input.files[0]);
    input.value = "";  // choosing the same file again is a new upload
  });
  const drop = $("drop");
  for (const ev of ["dragenter", "dragover"]) {
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const ev of ["dragleave", "drop"]) {
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (e) => {
    const f = e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files[0];
    if (f) upload(f);
  });
  // a photo dropped outside the box must not make the browser navigate away from the page
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
  loadInfo();
}

document.addEventListener("DOMContentLoaded", setup);
