// "Speak as I type": the text box's new text goes over the realtime WebSocket
// (/v1/audio/speech/realtime, Mistral's protocol) as it is typed; the server speaks each sentence as
// soon as it is complete and the page plays the float32 pcm deltas as they arrive. Ctrl+Enter (or
// Speak) flushes the rest; only text added at the end is sent (an edit before it is not re-spoken).
"use strict";

const typing = {
  state: "off", // off | connecting | on | error
  sent: "", // the text sent so far in this session
  samples: 0, // float32 samples played
  done: 0, // speech.audio.done events received
  error: null,
};
window.voxtralTyping = typing;

let socket = null;
const typingPlayer = new Player(); // this mode's own (app.js)

function typingStatus(text) {
  document.getElementById("typing-status").textContent = text;
}

function playFloat32(bytes) {
  const count = bytes.length >> 2;
  if (!count) return;
  typingPlayer.play(new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + count * 4)), 24000);
  typing.samples += count;
}

function send(message) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
}

function sendNewText() {
  const text = document.getElementById("text").value;
  if (!text.startsWith(typing.sent)) { // an edit before the end: follow it from here on
    typing.sent = text;
    return;
  }
  const added = text.slice(typing.sent.length);
  if (added) send({ type: "input_text.append", text: added });
  typing.sent = text;
}

async function startTyping() {
  await typingPlayer.open();
  typing.state = "connecting";
  typing.error = null;
  typing.sent = "";
  typingStatus("Connecting…");
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  // with voxtral-serve --api-key, the key rides as a subprotocol (a browser cannot set the header)
  const key = document.getElementById("api-key").value.trim();
  const protocols = key ? ["voxtral-realtime", `openai-insecure-api-key.${key}`] : [];
  socket = new WebSocket(`${scheme}//${location.host}/v1/audio/speech/realtime`, protocols);
  socket.onmessage = (message) => {
    const event = JSON.parse(message.data);
    if (event.type === "session.created") {
      send({ type: "session.update", session: { voice: document.getElementById("voice").value,
                                                response_format: "pcm" } });
    } else if (event.type === "session.updated") {
      typing.state = "on";
      typingStatus("Listening: each sentence is spoken as soon as it is typed.");
      sendNewText();
    } else if (event.type === "speech.audio.delta") {
      const binary = atob(event.audio_data);
      const bytes = new Uint8Array(binary.length);
      for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
      playFloat32(bytes);
    } else if (event.type === "speech.audio.done") {
      typing.done += 1;
      typingStatus("Spoken. Type more, or untick the box.");
    } else if (event.type === "error") {
      typing.error = event.error.message;
      typingStatus(`The server said: ${event.error.message}`);
    }
  };
  socket.onclose = (event) => {
    if (typing.state !== "off") {
      typing.state = event.code === 1000 ? "off" : "error";
      typingStatus(event.code === 1000 ? "" : `The session ended: ${event.reason || event.code}`);
    }
    socket = null;
  };
}

function stopTyping() {
  typing.state = "off";
  send({ type: "input_text.end" });
  typingStatus("");
}

document.addEventListener("DOMContentLoaded", () => {
  const box = document.getElementById("typing");
  box.addEventListener("change", () => (box.checked ? startTyping() : stopTyping()));
  document.getElementById("text").addEventListener("input", () => {
    if (typing.state === "on") sendNewText();
  });
  // Speak (or Ctrl+Enter) in this mode: speak what is left now; the page's own request is not made
  document.getElementById("speech-form").addEventListener("submit", (event) => {
    if (typing.state !== "on") return;
    event.stopImmediatePropagation();
    event.preventDefault();
    sendNewText();
    send({ type: "input_text.flush" });
  }, true);
});
