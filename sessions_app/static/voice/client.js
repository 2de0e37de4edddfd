// The web client: a session over REST, the microphone over /ws/voice, events on the page.
"use strict";

const CLOSE_MEANINGS = {
  1000: "Session closed",
  1006: "Connection lost",
  1011: "Server error",
  4400: "Protocol error",
  4401: "Not authorised (token refused)",
  4404: "Session not found or closed",
  4408: "Closed after being idle",
  4409: "Replaced by a newer connection (another tab?)",
  4413: "A frame was too large",
  4429: "Audio arrived too fast",
};
const RECONNECT_CODES = new Set([1006, 1011, 1001]);

const $ = (id) => document.getElementById(id);
const state = { session: null, ws: null, lastSeq: 0, seen: new Set(), tasks: new Map(),
  userClosed: false, mic: null, retries: 0, partial: null, voices: [], speaking: null };
// Spoken replies (CONTRACT 2b): PCM16 at this rate, played by an AudioWorklet. What the page
// and its worklet did is kept here for people and tests to look at.
const VOICE_RATE = 24000;
const voice = { on: localStorage.getItem("voice.on") !== "off", player: null, context: null,
  played: 0, queued: 0, flushed: 0, chunks: 0, stray: 0, started: 0, interrupted: 0, done: 0 };
window.voicePlayback = voice;

function show(id, text) { $(id).textContent = text; }

function log(kind, text) {
  const li = document.createElement("li");
  li.className = kind;
  li.textContent = text;
  $("log").prepend(li);
  while ($("log").children.length > 50) $("log").lastChild.remove();
}

async function keyHash() {
  let key = localStorage.getItem("voice.key");
  if (!key) {
    key = crypto.randomUUID();
    localStorage.setItem("voice.key", key);
  }
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(key));
  return "sha256:" + [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

// The session token (CONTRACT 1b) is kept in memory only: never in storage, never in a URL.
async function api(method, path, body, token) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(path, {
    method, headers, cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.detail || JSON.stringify(data) || response.statusText);
  return data;
}

async function newSession() {
  try {
    let ns = localStorage.getItem("voice.namespace");
    if (!ns) {
      ns = "web-" + crypto.randomUUID().slice(0, 8);
      localStorage.setItem("voice.namespace", ns);
    }
    const session = await api("POST", "/api/v1/sessions", {
      namespace_id: ns, key_hash: await keyHash(), device_type: "web", client_version: "web-1",
    });
    Object.assign(state, {
      session, lastSeq: 0, seen: new Set(), tasks: new Map(), userClosed: false, closedBecause: null,
    });
    renderTasks();
    show("session", session.id.slice(0, 8));
    connect(session.websocket_url, false);
  } catch (err) {
    showError("Could not create a session: " + err.message);
  }
}

function connect(url, resume) {
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  state.ws = ws;
  show("status", "connecting");
  ws.onopen = () => {
    state.retries = 0;
    show("status", "connected");
    $("mic").disabled = $("send").disabled = $("close").disabled = $("stop").disabled = false;
    if (resume) ws.send(JSON.stringify({ type: "session.resume", last_seq: state.lastSeq }));
  };
  ws.onmessage = (message) => {
    if (typeof message.data === "string") onEvent(JSON.parse(message.data));
    else playChunk(message.data); // a binary frame: reply audio
  };
  ws.onclose = (event) => onClose(ws, event.code);
}

function onEvent(event) {
  if (event.seq) {
    if (state.seen.has(event.seq)) return; // replayed after a resume, already shown
    state.seen.add(event.seq);
    state.lastSeq = Math.max(state.lastSeq, event.seq);
  }
  log(event.type, `${event.seq ?? ""} ${event.type}`);
  switch (event.type) {
    case "session.ready":
      state.rate = event.audio.sample_rate;
      state.voices = event.voices || [];
      show("format", `${event.audio.encoding} ${event.audio.sample_rate} Hz`);
      renderVoice();
      if (voice.on && state.voices.length && !event.output_audio) askForVoice(true);
      break;
    case "response.audio.started":
      voice.started += 1;
      state.speaking = event.response_id;
      show("speaking", "speaking");
      break;
    case "response.audio.delta": playChunk(base64ToBuffer(event.data)); break;
    case "response.audio.done":
      voice.done += 1;
      state.speaking = null;
      show("speaking", "");
      break;
    case "response.audio.interrupted":
      voice.interrupted += 1;
      if (voice.player) voice.player.port.postMessage({ flush: true }); // stop at once
      state.speaking = null;
      show("speaking", `interrupted after ${event.sent_ms} ms`);
      break;
    case "speech.started": show("status", "listening"); break;
    case "speech.stopped": show("status", "processing"); break;
    case "transcript.partial": setPartial(event.text); break;
    case "transcript.final":
      setPartial("");
      addLine("transcripts", event.text);
      break;
    case "response": addLine("replies", event.text); show("status", "connected"); break;
    case "task.created":
    case "task.updated": {
      const known = state.tasks.get(event.task.id) || {};
      const text = event.text ?? known.text; // the task's own words (task events carry them)
      state.tasks.set(event.task.id, { ...known, ...event.task, text });
      renderTasks();
      break;
    }
    case "error":
      if (event.close_code) state.closeReason = event.message;
      else showError(`${event.code}: ${event.message}`);
      break;
    case "session.closed":
      state.userClosed = true;
      state.closedBecause = event.reason;
      show("status", `closed (${event.reason})`);
      break;
  }
}

// spoken replies ---------------------------------------------------------------------------
function renderVoice() {
  const button = $("voice");
  button.disabled = !state.voices.length;
  button.textContent = !state.voices.length ? "No voice on this server"
    : voice.on ? "Voice on" : "Voice off";
  button.setAttribute("aria-pressed", String(voice.on && state.voices.length > 0));
}

async function ensurePlayer() {
  if (voice.player) return voice.player;
  let context;
  try {
    context = new AudioContext({ sampleRate: VOICE_RATE });
  } catch {
    context = new AudioContext(); // the worklet resamples
  }
  await context.audioWorklet.addModule("/static/voice/pcm-player.js");
  const player = new AudioWorkletNode(context, "pcm16-player", {
    outputChannelCount: [1], processorOptions: { sourceRate: VOICE_RATE },
  });
  player.port.onmessage = (message) => Object.assign(voice, message.data);
  player.connect(context.destination);
  Object.assign(voice, { player, context });
  return player;
}

function askForVoice(on) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return;
  const output = on
    ? { encoding: "pcm_s16le", sample_rate: VOICE_RATE, voice: state.voices[0], transport: "binary" }
    : { voice: null };
  if (on) ensurePlayer().catch((err) => showError("Audio out: " + err.message));
  state.ws.send(JSON.stringify({ type: "session.update", output_audio: output }));
}

function toggleVoice() {
  voice.on = !voice.on;
  localStorage.setItem("voice.on", voice.on ? "on" : "off");
  if (!voice.on) stopSpeaking();
  askForVoice(voice.on);
  renderVoice();
}

function stopSpeaking() {
  if (state.speaking && state.ws && state.ws.readyState === WebSocket.OPEN) {
    state.ws.send(JSON.stringify({ type: "response.cancel" }));
  }
  if (voice.player) voice.player.port.postMessage({ flush: true });
}

function playChunk(buffer) {
  voice.chunks += 1;
  if (!state.speaking) voice.stray += 1; // audio outside started..done: must never happen
  if (!voice.player) return; // voice switched off meanwhile
  if (voice.context.state === "suspended") voice.context.resume();
  voice.player.port.postMessage({ pcm: buffer }, [buffer]);
}

function base64ToBuffer(data) {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  return bytes.buffer;
}

function onClose(ws, code) {
  if (ws !== state.ws) return;
  stopMic(false);
  $("mic").disabled = $("send").disabled = $("close").disabled = $("stop").disabled = true;
  const meaning = CLOSE_MEANINGS[code] || "Closed";
  const reason = state.closeReason ? ` (${state.closeReason})` : "";
  state.closeReason = null;
  if (code === 1000 || state.userClosed) {
    show("status", state.closedBecause ? `closed (${state.closedBecause})` : `closed: ${meaning}`);
    return;
  }
  showError(`${code}: ${meaning}${reason}`);
  show("status", `disconnected (${code})`);
  if (RECONNECT_CODES.has(code) && state.session && state.retries < 5) {
    state.retries += 1;
    setTimeout(reconnect, 500 * 2 ** state.retries);
  }
}

async function reconnect() {
  try {
    const fresh = await api(
      "GET", `/api/v1/sessions/${state.session.id}`, undefined, state.session.session_token,
    );
    if (!fresh.websocket_url) return show("status", "closed: the session ended");
    log("reconnect", "reconnecting with session.resume");
    connect(fresh.websocket_url, true);
  } catch (err) {
    showError("Reconnect failed: " + err.message);
  }
}

async function toggleMic() {
  if (state.mic) return stopMic(true);
  try {
    const rate = state.rate || 16000; // the session's rate, from session.ready
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
    });
    let context;
    try {
      context = new AudioContext({ sampleRate: rate });
    } catch {
      context = new AudioContext(); // the worklet resamples
    }
    await context.audioWorklet.addModule("/static/voice/pcm-worklet.js");
    const node = new AudioWorkletNode(context, "pcm16-writer", {
      processorOptions: { targetRate: rate, frameMs: 20 },
    });
    node.port.onmessage = (message) => {
      if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(message.data);
    };
    context.createMediaStreamSource(stream).connect(node);
    node.connect(context.destination); // silent: the processor writes no output
    state.mic = { stream, context };
    $("mic").textContent = "Stop microphone";
  } catch (err) {
    showError("Microphone: " + err.message);
  }
}

function stopMic(commit) {
  if (!state.mic) return;
  state.mic.stream.getTracks().forEach((t) => t.stop());
  state.mic.context.close();
  state.mic = null;
  $("mic").textContent = "Start microphone";
  if (commit && state.ws && state.ws.readyState === WebSocket.OPEN) {
    state.ws.send(JSON.stringify({ type: "audio.commit" }));
  }
}

function sendText(event) {
  event.preventDefault();
  const text = $("text").value.trim();
  if (text && state.ws && state.ws.readyState === WebSocket.OPEN) {
    state.ws.send(JSON.stringify({ type: "text", text }));
    addLine("transcripts", "(typed) " + text);
    $("text").value = "";
  }
}

function closeSession() {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) {
    state.userClosed = true;
    state.ws.send(JSON.stringify({ type: "session.close" }));
  }
}

function setPartial(text) { $("partial").textContent = text; }

function addLine(id, text) {
  const li = document.createElement("li");
  li.textContent = text;
  $(id).append(li);
}

const OPEN_STATES = new Set(["draft", "queued"]);

function renderTasks() {
  const body = $("tasks");
  body.replaceChildren();
  for (const task of state.tasks.values()) {
    const tr = document.createElement("tr");
    tr.dataset.task = task.id;
    const text = task.text || "";
    for (const value of [task.type, text, task.state, task.error_message || ""]) {
      const td = document.createElement("td");
      td.textContent = value;
      tr.append(td);
    }
    const actions = document.createElement("td");
    if (task.state === "draft") actions.append(taskButton(task, "confirm", "Confirm"));
    if (OPEN_STATES.has(task.state)) actions.append(taskButton(task, "cancel", "Cancel"));
    tr.append(actions);
    body.append(tr);
  }
}

function taskButton(task, action, label) {
  const button = document.createElement("button");
  button.textContent = label;
  button.name = `${action}-${task.id.slice(0, 8)}`;
  button.onclick = async () => {
    button.disabled = true;
    try {
      const updated = await api(
        "POST", `/api/v1/tasks/${task.id}/${action}`, undefined, state.session.session_token,
      );
      state.tasks.set(updated.id, { ...state.tasks.get(updated.id), ...updated });
      renderTasks();
    } catch (err) {
      showError(`${label}: ${err.message}`);
      button.disabled = false;
    }
  };
  return button;
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = false;
}

document.addEventListener("DOMContentLoaded", () => {
  $("new").onclick = newSession;
  $("mic").onclick = toggleMic;
  $("textform").onsubmit = sendText;
  $("close").onclick = closeSession;
  $("voice").onclick = toggleVoice;
  $("stop").onclick = stopSpeaking;
  renderVoice();
});
