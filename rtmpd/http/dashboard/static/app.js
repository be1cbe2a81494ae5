// rtmpd's dashboard: every live stream with a muted preview, its health, and the API's actions.
// Plain JavaScript, no framework. Everything a client named (stream keys, addresses, file names)
// reaches the page through textContent only, never as HTML.
"use strict";

const POLL_MS = 1000;
const SPARK_SAMPLES = 60;
const TOKEN_KEY = "rtmpd.apiToken";

const state = {
  server: null,          // /api/v1/server
  streams: new Map(),    // key -> {data, card, history, hls}
  lastPoll: 0,
  pollErrors: 0,
};
// Read by the browser tests.
window.rtmpdDashboard = state;

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function token() { return localStorage.getItem(TOKEN_KEY) || ""; }

async function api(path, options = {}) {
  const headers = {Accept: "application/json"};
  if (token()) headers.Authorization = `Bearer ${token()}`;
  const response = await fetch(`/api/v1/${path}`, {...options, headers});
  let body = null;
  try { body = await response.json(); } catch (e) { /* not JSON: reported below */ }
  if (!response.ok) {
    const message = body && body.error ? body.error.message : `HTTP ${response.status}`;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return body;
}

function status(text) { document.getElementById("status").textContent = text; }

// -- formatting ------------------------------------------------------------------

function duration(seconds) {
  if (seconds == null) return "–";
  const s = Math.floor(seconds), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h}h ${m}m` : m ? `${m}m ${s % 60}s` : `${s}s`;
}

function kbps(bitsPerSecond) {
  if (bitsPerSecond == null) return "–";
  return bitsPerSecond >= 1e6 ? `${(bitsPerSecond / 1e6).toFixed(2)} Mb/s` : `${Math.round(bitsPerSecond / 1e3)} kb/s`;
}

function codecs(s) {
  const video = s.video_codec ? `${s.video_codec}${s.width ? ` ${s.width}×${s.height}` : ""}` +
    `${s.framerate ? ` ${Math.round(s.framerate * 100) / 100} fps` : ""}` : "no video";
  return `${video} · ${s.audio_codec || "no audio"}`;
}

function rtmpPort() {
  const rtmp = (state.server && state.server.listeners || []).find(l => l.what === "RTMP server" && l.address);
  return rtmp ? rtmp.address.split(":").pop() : "1935";
}

function urls(key) {
  const host = location.hostname.includes(":") ? `[${location.hostname}]` : location.hostname;
  return {
    RTMP: `rtmp://${host}:${rtmpPort()}/${key}`,
    "HTTP-FLV": `${location.origin}/${key}.flv`,
    HLS: `${location.origin}/hls/${key}/index.m3u8`,
  };
}

async function copy(text, button) {
  try {
    await navigator.clipboard.writeText(text);
    flash(button, "Copied");
  } catch (e) {
    window.prompt("Copy this URL", text);
  }
}

function flash(button, text) {
  const old = button.textContent;
  button.textContent = text;
  setTimeout(() => { button.textContent = old; }, 1200);
}

// -- previews ------------------------------------------------------------------

const scripts = {};

function loadScript(name) {
  if (!scripts[name]) {
    scripts[name] = new Promise(resolve => {
      const script = el("script", {src: `/dashboard/vendor/${name}`});
      script.onload = () => resolve(true);
      script.onerror = () => resolve(false);
      document.head.append(script);
    });
  }
  return scripts[name];
}

// What the browser can decode, by the codec names the API reports.
const MSE_CODECS = {H264: 'video/mp4; codecs="avc1.42E01E"', H265: 'video/mp4; codecs="hvc1.1.6.L93.B0"',
                    AV1: 'video/mp4; codecs="av01.0.04M.08"', AAC: 'audio/mp4; codecs="mp4a.40.2"',
                    Opus: 'audio/mp4; codecs="opus"'};

function undecodable(s) {
  const media = window.MediaSource || window.ManagedMediaSource;
  if (!media) return "this browser has no Media Source Extensions";
  for (const codec of [s.video_codec, s.audio_codec]) {
    if (codec && MSE_CODECS[codec] && !media.isTypeSupported(MSE_CODECS[codec])) {
      return `this browser cannot decode ${codec}`;
    }
  }
  return "";
}

function showNote(entry, text) {
  const note = entry.card.querySelector(".note");
  note.textContent = text;
  note.hidden = false;
  entry.previewError = text;
}

// Sub-second preview: the stream's HTTP-FLV through mpegts.js; else its LL-HLS (hls.js or native).
async function attachPreview(entry) {
  const video = entry.card.querySelector("video");
  video.addEventListener("playing", () => { entry.card.querySelector(".note").hidden = true; });
  const cannot = undecodable(entry.data);
  if (cannot) {
    showNote(entry, `no preview: ${cannot}`);
    return;
  }
  if (await loadScript("mpegts.js") && window.mpegts && window.mpegts.getFeatureList().mseLivePlayback) {
    const player = window.mpegts.createPlayer({type: "flv", isLive: true, url: `/${entry.data.key}.flv`},
      {enableStashBuffer: false, liveBufferLatencyChasing: true, liveBufferLatencyMaxLatency: 1.2,
       liveBufferLatencyMinRemain: 0.3});
    entry.player = player;
    player.on(window.mpegts.Events.ERROR, (type, detail) => showNote(entry, `preview failed: ${type} ${detail}`));
    player.attachMediaElement(video);
    player.load();
  } else if (await loadScript("hls.min.js") && window.Hls && window.Hls.isSupported()) {
    const hls = new window.Hls({lowLatencyMode: true});
    entry.player = hls;
    hls.on(window.Hls.Events.ERROR, (event, data) => { if (data.fatal) showNote(entry, `preview failed: ${data.details}`); });
    hls.loadSource(`/hls/${entry.data.key}/index.m3u8`);
    hls.attachMedia(video);
  } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
    video.src = `/hls/${entry.data.key}/index.m3u8`;
  } else {
    showNote(entry, "no preview: mpegts.js is not installed (scripts/install-dashboard-vendor)");
    return;
  }
  video.play().catch(() => { /* a muted video may autoplay; a refusal leaves the first frame */ });
}

// -- the list of streams -------------------------------------------------------

function sparkline(canvas, history) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth * ratio, height = canvas.clientHeight * ratio;
  if (!width || !height) return;
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  const max = Math.max(1, ...history);
  ctx.strokeStyle = "#4da3ff";
  ctx.lineWidth = 1.5 * ratio;
  ctx.beginPath();
  history.forEach((value, i) => {
    const x = (i / (SPARK_SAMPLES - 1)) * width;
    const y = height - (value / max) * (height - 2 * ratio) - ratio;
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
}

async function act(button, path, what) {
  if (!token()) {
    document.getElementById("token-dialog").showModal();
    return;
  }
  button.disabled = true;
  try {
    const answer = await api(path, {method: "POST"});
    status(answer.message || `${what}: done`);
  } catch (e) {
    status(`${what} failed: ${e.message}`);
    if (e.status === 401) document.getElementById("token-dialog").showModal();
  } finally {
    button.disabled = false;
  }
}

function makeCard(key) {
  const card = el("article", {class: "card", "data-key": key},
    el("div", {class: "preview", title: "Click to enlarge", onclick: () => card.classList.toggle("big")},
      el("video", {muted: "", playsinline: "", autoplay: "", "data-key": key}),
      el("div", {class: "note", text: "loading preview…"})),
    el("div", {class: "body"},
      el("div", {class: "title"}, el("span", {class: "badge live", text: "LIVE"}),
        el("a", {href: `#/streams/${key}`, class: "key", text: key}),
        el("span", {class: "badge rec", text: "REC", hidden: ""})),
      el("div", {class: "facts"},
        el("span", {}, el("b", {class: "codecs"})),
        el("span", {}, "in ", el("b", {class: "bitrate"})),
        el("span", {}, el("b", {class: "players"}), " players"),
        el("span", {}, "up ", el("b", {class: "uptime"}))),
      el("canvas", {class: "spark"}),
      el("div", {class: "file"}),
      el("div", {class: "actions"})));
  card.querySelector("video").muted = true;
  const actions = card.querySelector(".actions");
  actions.append(
    el("button", {class: "danger", type: "button", text: "Kick",
                  onclick: e => act(e.target, `streams/${key}/kick`, "Kick")}),
    el("button", {class: "record", type: "button", text: "Stop recording",
                  onclick: e => act(e.target, `streams/${key}/record/${e.target.dataset.next}`, "Recording")}));
  for (const [name, url] of Object.entries(urls(key))) {
    actions.append(el("button", {type: "button", title: url, text: `Copy ${name}`,
                                 onclick: e => copy(url, e.target)}));
  }
  return card;
}

function updateCard(entry) {
  const s = entry.data, card = entry.card;
  card.querySelector(".codecs").textContent = codecs(s);
  card.querySelector(".bitrate").textContent = kbps(s.bitrate_in);
  card.querySelector(".players").textContent = String(s.subscribers ?? 0);
  card.querySelector(".uptime").textContent = duration(s.uptime);
  const recording = Boolean(s.recording_file) && s.recording_state !== "stopped";
  card.querySelector(".badge.rec").hidden = !recording;
  card.querySelector(".file").textContent = s.recording_file ? `recording: ${s.recording_file}` : "not recording";
  const record = card.querySelector("button.record");
  record.dataset.next = recording ? "stop" : "start";
  record.textContent = recording ? "Stop recording" : "Start recording";
  entry.history.push(s.bitrate_in || 0);
  if (entry.history.length > SPARK_SAMPLES) entry.history.shift();
  sparkline(card.querySelector(".spark"), entry.history);
}

function renderList(streams) {
  const view = document.getElementById("view");
  let grid = view.querySelector(".grid");
  if (!grid) {
    view.replaceChildren(grid = el("section", {class: "grid"}), el("p", {class: "empty", text: "No live streams."}));
  }
  const live = streams.filter(s => s.publisher);
  const seen = new Set();
  for (const data of live) {
    seen.add(data.key);
    let entry = state.streams.get(data.key);
    if (!entry) {
      entry = {data, card: makeCard(data.key), history: [], player: null};
      state.streams.set(data.key, entry);
      grid.append(entry.card);
      attachPreview(entry);
    }
    entry.data = data;
    updateCard(entry);
  }
  for (const [key, entry] of state.streams) {
    if (!seen.has(key)) {
      if (entry.player) entry.player.destroy();
      entry.card.remove();
      state.streams.delete(key);
    }
  }
  view.querySelector(".empty").hidden = live.length > 0;
}

// -- one stream's page -----------------------------------------------------------

async function renderStream(key) {
  const view = document.getElementById("view");
  let detail;
  try {
    detail = (await api(`streams/${key}`)).stream;
  } catch (e) {
    view.replaceChildren(el("p", {class: "empty", text: `${key}: ${e.message}`}), el("a", {href: "#/", text: "All streams"}));
    return;
  }
  const rows = (detail.players || []).map(p => el("tr", {},
    el("td", {text: p.conn_id}), el("td", {text: p.peer || ""}), el("td", {text: duration(p.uptime)}),
    el("td", {text: String(p.bytes_sent ?? "")}), el("td", {text: String(p.dropped_frames ?? 0)}),
    el("td", {text: String(p.buffered_bytes ?? 0)})));
  const table = el("table", {},
    el("thead", {}, el("tr", {}, ...["conn", "address", "uptime", "bytes", "dropped", "queued"].map(h => el("th", {text: h})))),
    el("tbody", {}, ...rows));
  const facts = el("div", {class: "facts"},
    el("span", {}, el("b", {text: codecs(detail)})), el("span", {}, "in ", el("b", {text: kbps(detail.bitrate_in)})),
    el("span", {}, "out ", el("b", {text: kbps(detail.bitrate_out)})), el("span", {}, "up ", el("b", {text: duration(detail.uptime)})),
    el("span", {}, "publisher ", el("b", {text: detail.publisher || "none"})));
  view.replaceChildren(el("p", {}, el("a", {href: "#/", text: "← All streams"})),
    el("h2", {text: key}), facts, el("h3", {text: `Players (${rows.length})`}), el("div", {class: "table-wrap"}, table));
}

// -- the loop ------------------------------------------------------------------

function route() {
  const match = location.hash.match(/^#\/streams\/(.+)$/);
  return match ? decodeURIComponent(match[1]) : null;
}

async function poll() {
  try {
    if (!state.server) {
      state.server = (await api("server")).server;
      document.getElementById("server-info").textContent = `rtmpd ${state.server.version}`;
    }
    const key = route();
    if (key) {
      await renderStream(key);
    } else {
      renderList((await api("streams")).streams);
    }
    state.lastPoll = Date.now();
    state.pollErrors = 0;
    status("");
  } catch (e) {
    state.pollErrors += 1;
    status(e.status === 401 ? "the API needs a token from this address" : `API unreachable: ${e.message}`);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

window.addEventListener("hashchange", () => {
  for (const entry of state.streams.values()) if (entry.player) entry.player.destroy();
  state.streams.clear();
  document.getElementById("view").replaceChildren();
});

document.getElementById("token-button").addEventListener("click", () => {
  document.getElementById("token-input").value = token();
  document.getElementById("token-dialog").showModal();
});
document.getElementById("token-dialog").addEventListener("close", () => {
  const dialog = document.getElementById("token-dialog");
  if (dialog.returnValue === "save") {
    const value = document.getElementById("token-input").value.trim();
    if (value) localStorage.setItem(TOKEN_KEY, value); else localStorage.removeItem(TOKEN_KEY);
  }
});

poll();
