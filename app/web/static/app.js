"use strict";

const ENDPOINT = "/computervision/imageanalysis:segment?api-version=2023-02-01-preview";
const KEY_STORE = "bgremoval.apiKey";
const FORMATS = "JPEG, PNG, GIF, BMP, WEBP, ICO, TIFF";

const $ = (id) => document.getElementById(id);
const form = $("form"), fileInput = $("file-input"), dropZone = $("drop-zone"), dropTitle = $("drop-title");
const urlInput = $("url-input"), modeSelect = $("mode-select"), apiKey = $("api-key"), rememberKey = $("remember-key");
const runButton = $("run-button"), statusLine = $("status"), errorBox = $("error");
const results = $("results"), original = $("original"), cutout = $("cutout"), matte = $("matte"), note = $("note");
const download = $("download"), elapsedOut = $("elapsed"), dimensionsOut = $("dimensions");
const bgMode = $("bg-mode"), bgColor = $("bg-color");
const targetSelect = $("target-select"), decontaminate = $("decontaminate"), targetDone = $("target-done");
const modelSelect = $("model-select");
const TARGET_WORDS = { subject: "Kept the subject.", scene: "Kept the scene, less the sky." };

let file = null;
let objectUrls = [];

// --- choosing the input ---------------------------------------------------

function chooseFile(chosen) {
  if (!chosen) return;
  file = chosen;
  urlInput.value = "";
  dropTitle.textContent = `${chosen.name} (${formatSize(chosen.size)})`;
  clearError();
}

function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} bytes`;
  return bytes < 1048576 ? `${Math.round(bytes / 1024)} KB` : `${(bytes / 1048576).toFixed(1)} MB`;
}

dropZone.addEventListener("click", () => fileInput.click());
fileInput.addEventListener("change", () => chooseFile(fileInput.files[0]));

urlInput.addEventListener("input", () => {
  if (urlInput.value.trim() && file) {
    file = null;
    fileInput.value = "";
    dropTitle.textContent = "Choose an image";
  }
});

// Stop a file dropped beside the zone from replacing the page.
for (const type of ["dragover", "drop"]) document.addEventListener(type, (event) => event.preventDefault());
dropZone.addEventListener("dragenter", () => dropZone.classList.add("dragging"));
dropZone.addEventListener("dragleave", () => dropZone.classList.remove("dragging"));
dropZone.addEventListener("drop", (event) => {
  dropZone.classList.remove("dragging");
  const dropped = event.dataTransfer.files[0];
  if (dropped) return chooseFile(dropped);
  const link = event.dataTransfer.getData("text/uri-list").split("\n")[0].trim();
  if (link) {
    urlInput.value = link;
    urlInput.dispatchEvent(new Event("input"));
  }
});

// --- API key --------------------------------------------------------------

const storedKey = localStorage.getItem(KEY_STORE);
if (storedKey) {
  apiKey.value = storedKey;
  rememberKey.checked = true;
}

function saveKey() {
  if (rememberKey.checked && apiKey.value.trim()) localStorage.setItem(KEY_STORE, apiKey.value.trim());
  else localStorage.removeItem(KEY_STORE);
}
rememberKey.addEventListener("change", saveKey);
apiKey.addEventListener("change", saveKey);

// --- running --------------------------------------------------------------

form.addEventListener("submit", (event) => {
  event.preventDefault();
  run();
});

async function run() {
  if (runButton.getAttribute("aria-disabled") === "true") return;
  clearError();
  const url = urlInput.value.trim();
  if (!file && !url) return showError("Choose a picture or paste an image URL first.");
  if (!file && !/^https?:\/\/\S+$/i.test(url)) return showError("Enter a full web address starting with https:// or http://.");

  const mode = modeSelect.value;
  const query = new URLSearchParams({ mode });
  // "Server's default" leaves the target out, so BGR_TARGET applies. The checkbox has no such
  // third state, so it always says what it shows: unticked is "false", whatever BGR_DECONTAMINATE is.
  if (targetSelect.value) query.set("target", targetSelect.value);
  if (modelSelect.value) query.set("model", modelSelect.value);
  if (mode === "backgroundRemoval") query.set("decontaminate", String(decontaminate.checked));
  const headers = {};
  const key = apiKey.value.trim();
  saveKey();
  if (key) headers["Ocp-Apim-Subscription-Key"] = key;
  let body;
  if (file) {
    body = file;
    // The service accepts image/* or octet-stream; a file the browser can't type still goes, as bytes.
    headers["Content-Type"] = file.type.startsWith("image/") ? file.type : "application/octet-stream";
  } else {
    body = JSON.stringify({ url });
    headers["Content-Type"] = "application/json";
  }
  const source = file ? { name: file.name, size: file.size, src: URL.createObjectURL(file) } : { name: url, src: url };

  // aria-disabled rather than disabled: a disabled button would drop keyboard focus to the page.
  runButton.setAttribute("aria-disabled", "true");
  statusLine.textContent = "Working…";
  const started = performance.now();
  try {
    let response;
    try {
      response = await fetch(`${ENDPOINT}&${query}`, { method: "POST", headers, body });
    } catch {
      throw new Error("We couldn't reach the server. Check your connection and try again.");
    }
    if (!response.ok) throw new Error(await describeError(response, source, Boolean(key)));
    const png = await response.blob();
    const elapsed = Math.round(performance.now() - started);
    await showResult(png, mode, source, elapsed);
    targetDone.textContent = TARGET_WORDS[response.headers.get("x-segment-target")] || "";
    statusLine.textContent = `Done in ${elapsed} ms.`;
  } catch (error) {
    if (source.src.startsWith("blob:")) URL.revokeObjectURL(source.src);
    results.hidden = true;
    statusLine.textContent = "";
    showError(error.message);
  } finally {
    runButton.removeAttribute("aria-disabled");
  }
}

async function describeError(response, source, sentKey) {
  let message = "";
  try {
    message = (await response.json()).error.message || "";
  } catch {
    // Not the service's JSON envelope (a proxy page, say): the status alone decides.
  }
  console.warn("segment failed", response.status, message);
  const seconds = response.headers.get("Retry-After");
  switch (response.status) {
    case 400: return describeBadRequest(message, source);
    case 401: return sentKey
      ? "That API key wasn't accepted. Check it and try again."
      : "This server needs an API key. Enter it in the API key field.";
    case 404: return "This server doesn't offer background removal at this address.";
    case 408: return "The upload took too long. Check your connection and try again.";
    case 413: return "The file is larger than this server accepts.";
    case 429: return `The server is busy. Try again in ${seconds || "a few"} second${seconds === "1" ? "" : "s"}.`;
    case 500: return "Something went wrong on the server while working on this picture. Try again, or try another picture.";
    case 502: case 503: case 504: return "The server isn't available right now (it may be starting or restarting). Try again in a moment.";
    default: return `The server answered with an unexpected error (HTTP ${response.status}).`;
  }
}

function describeBadRequest(message, source) {
  let match;
  if (/format is not valid/i.test(message)) return `That file isn't an image we can read (${FORMATS}).`;
  if ((match = /smaller than (\d+) and larger than (\d+)/i.exec(message))) {
    const [min, max] = [match[1], match[2]].map((n) => Number(n).toLocaleString("en-US"));
    return `The picture must be between ${min} and ${max} pixels on each side.`;
  }
  if ((match = /image size .*larger than (\d+) bytes/i.exec(message))) {
    if (source.size === 0) return "That file is empty.";
    const limit = `${Math.round(Number(match[1]) / 1048576)} MB`;
    return source.size === undefined ? `The image at that URL is empty or larger than ${limit}.` : `The file is larger than ${limit}.`;
  }
  if (/url is not accessible/i.test(message)) return "We couldn't download that URL. Check that it's a public link straight to an image.";
  if (/content type/i.test(message)) return "That kind of file can't be sent. Choose an image file.";
  if (/mode is invalid/i.test(message)) return "This server doesn't support that mode.";
  if (/no sky network/i.test(message)) return "This server can't tell sky from scene. Choose to keep the subject instead.";
  if (/valid JSON/i.test(message)) return "That URL couldn't be sent. Check it and try again.";
  return "The server couldn't use that picture.";
}

// --- showing the result ---------------------------------------------------

function loadImage(img, src) {
  img.src = src;
  return img.decode().then(() => img, () => null);
}

async function showResult(png, mode, source, elapsed) {
  for (const url of objectUrls) URL.revokeObjectURL(url);
  const pngUrl = URL.createObjectURL(png);
  objectUrls = [pngUrl, ...(source.src.startsWith("blob:") ? [source.src] : [])];

  const output = await loadImage(new Image(), pngUrl);
  if (!output) throw new Error("The server's answer wasn't a picture we could show.");
  const shown = await loadImage(original, source.src);
  const { naturalWidth: width, naturalHeight: height } = output;
  for (const canvas of [cutout, matte]) {
    canvas.width = width;
    canvas.height = height;
  }
  const cut = cutout.getContext("2d", { willReadFrequently: true });
  const mat = matte.getContext("2d", { willReadFrequently: true });
  note.hidden = true;

  if (mode === "backgroundRemoval") {
    cut.drawImage(output, 0, 0);
    const pixels = cut.getImageData(0, 0, width, height);
    const d = pixels.data;
    for (let i = 0; i < d.length; i += 4) {
      d[i] = d[i + 1] = d[i + 2] = d[i + 3];
      d[i + 3] = 255;
    }
    mat.putImageData(pixels, 0, 0);
  } else {
    mat.drawImage(output, 0, 0);
    const pixels = mat.getImageData(0, 0, width, height);
    const d = pixels.data;
    for (let i = 0; i < d.length; i += 4) {
      d[i + 3] = d[i];
      d[i] = d[i + 1] = d[i + 2] = 0;
    }
    cut.putImageData(pixels, 0, 0);
    if (shown) {
      // "source-in" keeps the original only where the matte is opaque, and never reads the original's
      // pixels, so an image from another site (which would taint the canvas) still works.
      cut.globalCompositeOperation = "source-in";
      cut.drawImage(original, 0, 0, width, height);
      cut.globalCompositeOperation = "source-over";
    } else {
      cut.clearRect(0, 0, width, height);
    }
  }
  if (!shown) {
    const cutoutToo = mode === "foregroundMatting" ? ", so the cut-out can't be previewed" : "";
    note.textContent = `Your browser couldn't load the original from that URL${cutoutToo}. The download is unaffected.`;
    note.hidden = false;
  }

  const base = baseName(source.name);
  download.href = pngUrl;
  download.download = `${base}-${mode === "backgroundRemoval" ? "cutout" : "matte"}.png`;
  download.textContent = mode === "backgroundRemoval" ? "Download cut-out PNG" : "Download matte PNG";
  dimensionsOut.textContent = `${width} × ${height}`;
  elapsedOut.textContent = `${elapsed} ms`;
  results.hidden = false;
}

function baseName(name) {
  let last = name;
  try {
    last = decodeURIComponent(new URL(name).pathname.split("/").pop());
  } catch {
    // A local file name, not a URL.
  }
  return last.replace(/\.[^.]*$/, "").replace(/[^\w.-]+/g, "_").slice(0, 80) || "image";
}

// Edge colours are a cut-out's; a matte has none.
function syncDecontaminate() {
  decontaminate.disabled = modeSelect.value !== "backgroundRemoval";
}
modeSelect.addEventListener("change", syncDecontaminate);
syncDecontaminate();

// --- the networks the server loaded (from /health/ready) -------------------

async function listModels() {
  let ready;
  try {
    const response = await fetch("/health/ready");
    ready = await response.json();
  } catch {
    return; // not ready yet, or an older server: "Server's default" still works
  }
  const names = Object.keys(ready.models || {});
  for (const name of names) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = name === ready.default_model ? `${name} (default)` : name;
    modelSelect.append(option);
  }
  modelSelect.disabled = names.length < 2;
}
listModels();

// --- cut-out background ---------------------------------------------------

function applyBackground() {
  const checker = bgMode.value === "checker";
  cutout.classList.toggle("checker", checker);
  cutout.style.backgroundColor = checker ? "" : bgColor.value;
}
bgMode.addEventListener("change", applyBackground);
bgColor.addEventListener("input", () => {
  bgMode.value = "color";
  applyBackground();
});

// --- errors ---------------------------------------------------------------

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = false;
}

function clearError() {
  errorBox.hidden = true;
  errorBox.textContent = "";
}
