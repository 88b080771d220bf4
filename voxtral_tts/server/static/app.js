// The page to try the voices: plain DOM and Web Audio, no framework, nothing from elsewhere.
// "Speak" asks POST /v1/audio/speech for server-sent events with raw 16-bit audio (pcm) and plays
// each delta as it arrives; "Download" asks for a whole file in the chosen format.
"use strict";

const $ = (id) => document.getElementById(id);

// What the page has done, for the curious and for the tests (read in a real browser).
const stats = {
  samplesScheduled: 0, // 16-bit samples handed to Web Audio by the last "Speak"
  partsDone: 0,
  parts: 0,
  lastStatus: null, // HTTP status of the last request
  state: "loading", // loading | key (the server asks for an API key) | idle | busy | done | stopped | error
};
window.voxtralPage = stats;

let config = null; // GET /web/config: the server's limits and formats
let controller = null; // AbortController of the request in flight

// Chunks of mono audio played one right after another on an AudioContext, made on first use (after a
// user gesture). "Speak" has one, "speak as I type" (typing.js) another.
class Player {
  constructor() {
    this.context = null;
    this.head = 0; // when the next chunk starts, in the context's time
    this.sources = new Set(); // buffer sources scheduled and not yet ended
  }

  async open() {
    this.context = this.context || new AudioContext();
    await this.context.resume();
  }

  play(samples, rate) {
    const buffer = this.context.createBuffer(1, samples.length, rate);
    buffer.getChannelData(0).set(samples);
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.context.destination);
    this.head = Math.max(this.head, this.context.currentTime + 0.05);
    source.start(this.head);
    this.head += buffer.duration;
    this.sources.add(source);
    source.onended = () => this.sources.delete(source);
  }

  silence() {
    for (const source of this.sources) source.stop();
    this.sources.clear();
    this.head = 0;
  }
}

const player = new Player(); // "Speak"'s

// --- small helpers -------------------------------------------------------------------------------

function setStatus(text, state) {
  $("status").textContent = text;
  if (state) stats.state = state;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function seconds(s) {
  return `${s.toFixed(2)} s`;
}

// The server's own words for a failed response: OpenAI's {"error": {"message": ...}} or Mistral's
// {"message": ...} (the voice routes), else the status.
async function serverMessage(response) {
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) return body.error.message;
    if (body && typeof body.message === "string") return body.message;
  } catch (_) {
    // not JSON: fall through to the status line
  }
  return `the server answered ${response.status} ${response.statusText}`.trim();
}

class ServerError extends Error {}

function languageName(code) {
  try {
    return new Intl.DisplayNames([navigator.language || "en", "en"], { type: "language" }).of(code) || code;
  } catch (_) {
    return code || "Other";
  }
}

// --- set-up: the server's settings and voices ----------------------------------------------------

// The Authorization header the API asks for when the server has keys (voxtral-serve --api-key).
function authHeaders() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function keyChanged() {
  sessionStorage.setItem("voxtral-api-key", $("api-key").value.trim());
  loadVoices().catch(failedToLoad);
}

async function loadConfig() {
  const response = await fetch("/web/config");
  if (!response.ok) throw new ServerError(await serverMessage(response));
  config = await response.json();
  $("model").textContent = config.model;
  $("text").maxLength = config.max_input_chars;
  const speed = $("speed");
  speed.min = config.speed.min;
  speed.max = config.speed.max;
  $("speed-hint").textContent = `${config.speed.min} to ${config.speed.max}; the pitch is kept.`;
  $("temperature").max = config.temperature.max;
  $("expressiveness").max = config.expressiveness.max;
  const format = $("format");
  format.replaceChildren(...config.formats.map((name) => new Option(name, name)));
  format.value = config.formats.includes("mp3") ? "mp3" : config.formats[0];
  $("key-field").hidden = !config.api_key_required;
  $("api-key").value = sessionStorage.getItem("voxtral-api-key") || "";
  countText();
}

async function loadVoices() {
  const response = await fetch("/v1/audio/voices", { headers: authHeaders() });
  if (response.status === 401) { // wait for the key: entering it loads the voices
    setStatus("This server asks for an API key: enter it above.", "key");
    $("api-key").focus();
    return;
  }
  if (!response.ok) {
    const body = await response.clone().json().catch(() => null);
    if (body && body.error && body.error.code === "loading") { // say so, and ask again
      setStatus(body.error.message, "loading");
      setTimeout(() => loadVoices().catch(failedToLoad), 1000);
      return;
    }
    throw new ServerError(await serverMessage(response));
  }
  const listing = await response.json();
  const groups = new Map();
  for (const voice of listing.voices.filter((v) => !v.status || v.status === "ready")) {
    const language = voice.language || "";
    if (!groups.has(language)) groups.set(language, []);
    groups.get(language).push(voice);
  }
  const select = $("voice");
  select.replaceChildren();
  for (const language of [...groups.keys()].sort((a, b) => languageName(a).localeCompare(languageName(b)))) {
    const group = document.createElement("optgroup");
    group.label = languageName(language);
    for (const voice of groups.get(language)) {
      const aliases = voice.aliases.length ? ` (${voice.aliases.join(", ")})` : "";
      group.append(new Option(`${voice.name}${aliases}`, voice.id));
    }
    select.append(group);
  }
  select.value = listing.default || listing.voices[0].id;
  select.disabled = false;
  setStatus(`Ready: ${listing.voices.length} voices.`, "idle");
  setBusy(false);
}

function failedToLoad(error) {
  setStatus("The page could not get ready.", "error");
  showError(error.message);
}

function countText() {
  const text = $("text");
  // maxlength counts UTF-16 units, the server counts characters: the page never sends more than the limit
  $("text-count").textContent = `${text.value.length} / ${text.maxLength} characters`;
}

// --- requests ------------------------------------------------------------------------------------

function requestBody(format) {
  const body = { model: config.model, input: $("text").value, voice: $("voice").value, response_format: format };
  const speed = $("speed").value.trim();
  if (speed !== "") body.speed = Number(speed);
  const seed = $("seed").value.trim();
  if (seed !== "") body.seed = Number(seed);
  const temperature = $("temperature").value.trim();
  if (temperature !== "" && Number(temperature) !== 0) body.temperature = Number(temperature);
  const expressiveness = $("expressiveness").value.trim();
  if (expressiveness !== "") body.expressiveness = Number(expressiveness);
  return body;
}

function setBusy(busy) {
  $("speak").disabled = busy || !config;
  $("download").disabled = busy || !config;
  $("stop").disabled = !busy;
  $("result").setAttribute("aria-busy", String(busy));
}

function resetMetrics() {
  for (const id of ["parts", "ttfa", "duration", "rtf"]) $(id).textContent = "–";
  $("progress").value = 0;
  $("progress").max = 1;
  stats.partsDone = 0;
  stats.parts = 0;
  showError("");
}

function showProgress(done, total) {
  stats.partsDone = done;
  stats.parts = total;
  $("progress").max = total;
  $("progress").value = done;
  $("parts").textContent = `${done} of ${total} done`;
}

// Runs one request: the busy state, Stop, and the error or "Stopped" at the end.
async function run(label, work) {
  controller = new AbortController();
  resetMetrics();
  setBusy(true);
  setStatus(label, "busy");
  try {
    await work(controller.signal);
  } catch (error) {
    if (error.name === "AbortError") {
      setStatus("Stopped.", "stopped");
    } else {
      setStatus("The request failed.", "error");
      showError(error instanceof ServerError ? error.message : `the request failed: ${error.message}`);
    }
  } finally {
    controller = null;
    setBusy(false);
  }
}

async function post(body, signal) {
  const response = await fetch("/v1/audio/speech", {
    method: "POST",
    headers: { "Content-Type": "application/json", ...authHeaders() },
    body: JSON.stringify(body),
    signal,
  });
  stats.lastStatus = response.status;
  if (!response.ok) throw new ServerError(await serverMessage(response));
  return response;
}

// --- Speak: server-sent events, each delta played as it arrives ----------------------------------

// The "data:" payloads of a server-sent event stream, parsed as JSON, as they arrive.
async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      const data = block.split(/\r?\n/).filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, "")).join("\n");
      if (data) yield JSON.parse(data);
    }
  }
}

function base64Bytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function joined(a, b) {
  const both = new Uint8Array(a.length + b.length);
  both.set(a);
  both.set(b, a.length);
  return both;
}

// Little-endian 16-bit samples → a buffer played right after the previous one.
function play(bytes) {
  const count = bytes.length >> 1;
  if (!count) return 0;
  const view = new DataView(bytes.buffer, bytes.byteOffset, count * 2);
  const samples = new Float32Array(count);
  for (let i = 0; i < count; i++) samples[i] = view.getInt16(2 * i, true) / 32768;
  player.play(samples, config.sample_rate);
  stats.samplesScheduled += count;
  return count;
}

async function speak(signal) {
  await player.open();
  player.silence();
  stats.samplesScheduled = 0;
  const started = performance.now();
  const response = await post({ ...requestBody("pcm"), stream_format: "sse" }, signal);
  let samples = 0;
  let odd = new Uint8Array(0); // a byte left over from a delta of odd length
  const metrics = () => {
    const audioSeconds = samples / config.sample_rate;
    $("duration").textContent = seconds(audioSeconds);
    if (audioSeconds > 0) $("rtf").textContent = ((performance.now() - started) / 1000 / audioSeconds).toFixed(2);
  };
  for await (const event of events(response)) {
    if (event.type === "speech.audio.delta") {
      let bytes = base64Bytes(event.audio);
      if (odd.length) bytes = joined(odd, bytes);
      odd = bytes.length % 2 ? bytes.slice(-1) : new Uint8Array(0);
      if (!samples) $("ttfa").textContent = `${Math.round(performance.now() - started)} ms`;
      samples += play(bytes);
      showProgress(event.part, event.parts);
      setStatus(`Speaking part ${event.part + 1} of ${event.parts}…`);
      metrics();
    } else if (event.type === "speech.audio.done") {
      showProgress(event.parts, event.parts);
      metrics();
      const cut = event.finish_reason === "length" ? " (a part reached its frame budget: its audio is cut)" : "";
      setStatus(`Done: ${seconds(samples / config.sample_rate)} of audio${cut}.`, "done");
      return;
    } else if (event.type === "error") {
      throw new ServerError(event.error.message);
    }
  }
  throw new ServerError("the stream ended before the audio was done");
}

// --- Download: the whole file in the chosen format -----------------------------------------------

async function download(signal) {
  const format = $("format").value;
  const started = performance.now();
  const response = await post(requestBody(format), signal);
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = `speech.${format}`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  const took = (performance.now() - started) / 1000;
  setStatus(`Saved speech.${format} (${(blob.size / 1024).toFixed(1)} KiB, made in ${seconds(took)}).`, "done");
}

function stop() {
  if (controller) controller.abort(); // the server stops generating when the connection closes
  player.silence();
}

// --- a voice from a recording: POST /v1/audio/voices, then its record polled until it is made ------

async function createVoice() {
  const file = $("sample").files[0];
  const say = (text) => { $("create-status").textContent = text; };
  if (!file) return say("Choose a recording first (3 to 25 s of one speaker).");
  const bytes = new Uint8Array(await file.arrayBuffer());
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  const name = $("voice-name").value.trim() || file.name;
  $("create").disabled = true;
  try {
    let response = await fetch("/v1/audio/voices", {
      method: "POST", headers: { "Content-Type": "application/json", ...authHeaders() },
      body: JSON.stringify({ name, sample_audio: btoa(binary), sample_filename: file.name }),
    });
    while (response.ok) {
      const voice = await response.json();
      if (voice.status === "ready") {
        await loadVoices();
        $("voice").value = voice.id;
        return say(`“${voice.name}” is ready and chosen above.`);
      }
      if (voice.status === "failed") return say(`“${voice.name}” could not be made: ${voice.error}`);
      say(`Making “${voice.name}”: ${voice.status}, ${Math.round(100 * voice.progress)} % (minutes on a CPU).`);
      await new Promise((resolve) => setTimeout(resolve, 2000));
      response = await fetch(`/v1/audio/voices/${encodeURIComponent(voice.id)}`, { headers: authHeaders() });
    }
    say(await serverMessage(response));
  } catch (error) {
    say(error.message);
  } finally {
    $("create").disabled = false;
  }
}

// --- wiring --------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("speech-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (!$("speak").disabled) run("Speaking…", speak);
  });
  $("download").addEventListener("click", () => {
    if (!$("download").disabled) run("Making the file…", download);
  });
  $("stop").addEventListener("click", stop);
  $("api-key").addEventListener("change", keyChanged);
  $("create").addEventListener("click", createVoice);
  $("text").addEventListener("input", countText);
  $("text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      $("speech-form").requestSubmit();
    }
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && controller) stop();
  });
  loadConfig().then(loadVoices).catch(failedToLoad);
});
