// agekit's web page: send a photo to /v1/estimate (or /v1/check), draw the faces over it, and chart each
// face's age distribution. Plain DOM, canvas and inline SVG: nothing is loaded from anywhere but this server.
"use strict";

const COLORS = ["#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed", "#0891b2", "#dc2626", "#4d7c0f"];
const $ = (id) => document.getElementById(id);
const state = { blob: null, url: null, image: null, result: null, busy: false, again: false, stream: null };

function mode() { return document.querySelector('input[name="mode"]:checked').value; }
function minAge() { return Number($("min-age").value); }
function fmt(v, d = 1) { return v === null || v === undefined ? "" : Number.isNaN(Number(v)) ? "\u2026" : Number(v).toFixed(d); }

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

async function loadImage(blob) {
  // an <img> applies the photo's EXIF orientation, as the server does, so the boxes line up
  if (state.url) URL.revokeObjectURL(state.url);  // the previous photo's: it would hold its blob for good
  const url = state.url = URL.createObjectURL(blob);
  const img = new Image();
  img.src = url;
  await img.decode();
  return img;
}

async function send() {
  if (!state.blob) return;
  if (state.busy) { state.again = true; return; }
  state.busy = true;
  const blob = state.blob;
  const check = mode() === "check";
  const params = new URLSearchParams({ probs: "true", level: $("level").value });
  if (check) params.set("min_age", String(minAge()));
  const form = new FormData();
  form.append("file", state.blob, "photo");
  const headers = {};
  const key = $("api-key").value.trim();
  if (key) headers["X-API-Key"] = key;
  setStatus("Scoring...");
  try {
    const response = await fetch(`/v1/${check ? "check" : "estimate"}?${params}`, { method: "POST", body: form, headers });
    let doc = null;
    try { doc = await response.json(); } catch (e) { doc = null; }
    if (state.blob !== blob) return;  // another photo was picked meanwhile: its own answer follows
    if (!response.ok) {
      const err = doc && doc.error ? `${doc.error.message} (${doc.error.code})` : `HTTP ${response.status}`;
      setStatus(`Error: ${err}`, true);
      return;
    }
    state.result = doc;
    render();
    const n = doc.faces.length;
    setStatus(n === 0 ? "No face found in this photo." : `${n} face${n === 1 ? "" : "s"} found.`);
  } catch (e) {
    setStatus(`Error: the server did not answer (${e.message})`, true);
  } finally {
    state.busy = false;
    if (state.again) { state.again = false; send(); }
  }
}

function decisionOf(face, t) {
  // the server's rule (AgeEstimator.check_age): over when the interval lies at or above t, under when below
  const [lo, hi] = face.interval;
  return lo >= t ? "over" : hi < t ? "under" : "uncertain";
}

function label(face) {
  if (mode() === "check" && face.decision) return `${face.decision} ${face.min_age} (p=${fmt(face.p_over, 2)})`;
  const g = face.gender ? `, ${face.gender[0].toUpperCase()} ${fmt(face.gender_prob, 2)}` : "";
  return `${fmt(face.age, 0)} (${fmt(face.interval[0], 0)}-${fmt(face.interval[1], 0)})${g}`;
}

function drawPhoto() {
  const img = state.image, doc = state.result, canvas = $("canvas");
  canvas.hidden = !img;  // a format the server reads but this browser cannot show (e.g. TIFF): the list only
  if (!img) return;
  const w = img.naturalWidth, h = img.naturalHeight;
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(img, 0, 0, w, h);
  if (!doc) return;
  // boxes come in the photo's pixels (doc.image); scale in case the browser decoded another size
  const sx = w / doc.image.width, sy = h / doc.image.height;
  const line = Math.max(2, Math.round(Math.max(w, h) / 300));
  ctx.font = `${Math.max(12, Math.round(Math.max(w, h) / 40))}px system-ui, sans-serif`;
  ctx.textBaseline = "bottom";
  doc.faces.forEach((face, i) => {
    const color = COLORS[i % COLORS.length];
    const [x1, y1, x2, y2] = face.box;
    ctx.lineWidth = line; ctx.strokeStyle = color;
    ctx.strokeRect(x1 * sx, y1 * sy, (x2 - x1) * sx, (y2 - y1) * sy);
    const text = `${i + 1}: ${label(face)}`;
    const tw = ctx.measureText(text).width + 8, th = parseInt(ctx.font, 10) + 6;
    const ty = y1 * sy - th < 0 ? y2 * sy + th : y1 * sy;
    ctx.fillStyle = color; ctx.fillRect(x1 * sx - line / 2, ty - th, tw, th);
    ctx.fillStyle = "#fff"; ctx.fillText(text, x1 * sx + 4 - line / 2, ty - 3);
  });
  canvas.dataset.faces = String(doc.faces.length);
}

function chart(face, ages, color) {
  // the face's distribution over the integer ages as bars; its interval shaded; the threshold in check mode
  const NS = "http://www.w3.org/2000/svg", W = 300, H = 90, B = 14, PAD = 10;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `age distribution of face ${face.face}`);
  const probs = face.probs || [], [a0, a1] = ages, span = Math.max(1, a1 - a0 + 1);
  const x = (age) => PAD + ((age - a0) / span) * (W - 2 * PAD), top = Math.max(...probs, 1e-9);
  const add = (tag, attrs) => { const el = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v); svg.appendChild(el); return el; };
  add("rect", { x: x(face.interval[0]), y: 0, width: Math.max(1, x(face.interval[1]) - x(face.interval[0])),
                height: H - B, fill: color, "fill-opacity": 0.12 });
  probs.forEach((p, k) => add("rect", { x: x(a0 + k), y: (H - B) * (1 - p / top), width: Math.max(1, (W - 2 * PAD) / span - 0.5),
                                        height: (H - B) * (p / top), fill: color, class: "bar" }));
  if (mode() === "check") add("line", { x1: x(minAge()), x2: x(minAge()), y1: 0, y2: H - B, stroke: "#111",
                                        "stroke-dasharray": "3 2" });
  for (let t = Math.ceil(a0 / 20) * 20; t <= a1; t += 20) {
    const tx = add("text", { x: x(t), y: H - 2, "font-size": 10, "text-anchor": "middle", fill: "#5b6475" });
    tx.textContent = String(t);
  }
  return svg;
}

function render() {
  const doc = state.result;
  $("result").hidden = false;
  drawPhoto();
  const list = $("faces");
  list.replaceChildren();
  doc.faces.forEach((face, i) => {
    const color = COLORS[i % COLORS.length];
    const li = document.createElement("li");
    li.className = "face";
    li.style.setProperty("--c", color);
    li.dataset.age = face.age; li.dataset.lo = face.interval[0]; li.dataset.hi = face.interval[1];
    const h = document.createElement("h2");
    h.textContent = `Face ${i + 1}: ${fmt(face.age)} years`;
    const p = document.createElement("p");
    p.className = "summary";
    p.textContent = `${Math.round(face.level * 100)}% interval ${fmt(face.interval[0])}-${fmt(face.interval[1])}` +
      (face.gender ? `; ${face.gender} (p=${fmt(face.gender_prob, 2)})` : "");
    li.append(h, p);
    if (mode() === "check" && face.decision) {
      const d = document.createElement("p");
      const strong = document.createElement("span");
      strong.className = `decision ${face.decision}`;
      strong.textContent = face.decision;
      d.append(strong, ` ${face.min_age}: P(age \u2265 ${face.min_age}) = ${fmt(face.p_over, 2)}`);
      d.className = "check"; li.dataset.decision = face.decision;
      li.append(d);
    }
    if (face.flags && face.flags.length) {
      const f = document.createElement("p");
      f.className = "flags";
      f.textContent = `less reliable: ${face.flags.join(", ")}`;
      li.append(f);
    }
    if (face.probs) li.append(chart(face, doc.ages, color));
    list.append(li);
  });
  const t = doc.timing;
  $("timing").textContent = `server time ${fmt(t.total_ms, 0)} ms (decode ${fmt(t.decode_ms, 0)}, ` +
    `faces and model ${fmt(t.inference_ms, 0)}, queue ${fmt(t.queue_ms, 0)})`;
}

async function usePhoto(blob) {
  if (!blob || !blob.size) return;
  state.blob = blob; state.result = null;
  let image = null;
  try {
    image = await loadImage(blob);
  } catch (e) {
    image = null;  // the browser cannot show it; the server still says why it cannot read it
  }
  if (state.blob !== blob) return;  // another photo was picked while this one was decoding
  state.image = image;
  if (state.image) $("result").hidden = false;
  drawPhoto(); $("faces").replaceChildren(); $("timing").textContent = "";  // nothing of the previous photo
  send();
}

// ---- inputs: pick, drop, camera ------------------------------------------------------------------------
$("file").addEventListener("change", (e) => usePhoto(e.target.files[0]));
const drop = $("drop");
["dragenter", "dragover"].forEach((ev) => drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); }));
["dragleave", "drop"].forEach((ev) => drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
drop.addEventListener("drop", (e) => usePhoto(e.dataTransfer.files[0]));

async function cameraStart() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setStatus("This browser gives no camera here (a camera needs https or localhost).", true);
    return;
  }
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  } catch (e) {
    setStatus(`No camera: ${e.message}`, true);
    return;
  }
  const video = $("video");
  video.srcObject = state.stream; video.hidden = false;
  $("camera-shoot").hidden = false; $("camera-stop").hidden = false; $("camera-start").hidden = true;
  setStatus("Camera on: take the photo when ready.");
}

function cameraStop() {
  if (state.stream) state.stream.getTracks().forEach((t) => t.stop());
  state.stream = null;
  $("video").hidden = true; $("camera-shoot").hidden = true; $("camera-stop").hidden = true;
  $("camera-start").hidden = false;
}

function cameraShoot() {
  const video = $("video");
  if (!video.videoWidth) return;
  const c = document.createElement("canvas");
  c.width = video.videoWidth; c.height = video.videoHeight;
  c.getContext("2d").drawImage(video, 0, 0);
  c.toBlob((blob) => usePhoto(blob), "image/jpeg", 0.92);
}

$("camera-start").addEventListener("click", cameraStart);
$("camera-stop").addEventListener("click", cameraStop);
$("camera-shoot").addEventListener("click", cameraShoot);

// ---- mode, level, threshold ------------------------------------------------------------------------------
document.querySelectorAll('input[name="mode"]').forEach((r) => r.addEventListener("change", () => {
  $("check-row").hidden = mode() !== "check";
  send();
}));
$("level").addEventListener("change", send);
$("min-age").addEventListener("input", () => {
  // while dragging: the decision by the interval rule at once; P(age >= t) comes with the answer on release
  $("min-age-value").textContent = $("min-age").value;
  if (!state.result) return;
  state.result.faces.forEach((f) => { if (f.decision) { f.decision = decisionOf(f, minAge()); f.min_age = minAge(); f.p_over = NaN; } });
  render();
});
$("min-age").addEventListener("change", send);
