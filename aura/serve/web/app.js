// The AuRA voice page: hold to record, encode 16-kHz WAV here, stream the answer from /v1/chat/completions.
// Plain browser APIs only (MediaRecorder, Web Audio, fetch streams): the page is served as is, no build step.
"use strict";

const SAMPLE_RATE = 16000; // what the model reads; the server would resample anything else anyway
const MIN_SECONDS = 0.3; // shorter than this is a tap, not a question
// the prompts the shipped checkpoints were trained on (aura/data/tasks.py), so requests look like training data
const PROMPTS = {
  answer: { text: "Answer the spoken question in a few words.", audioFirst: true },
  context: { text: "Context: {context}\n\nAnswer the spoken question using the context, in a few words.", audioFirst: false },
  transcribe: { text: "Transcribe the audio.", audioFirst: false },
};

const $ = (id) => document.getElementById(id);
const talk = $("talk");
const sendText = $("send-text");
const contextBox = $("context");
const statusLine = $("status");
const settings = { key: $("api-key"), maxTokens: $("max-tokens") };

for (const [name, input] of Object.entries(settings)) {
  input.value = localStorage.getItem(`aura.${name}`) ?? input.value;
  input.addEventListener("change", () => localStorage.setItem(`aura.${name}`, input.value));
}

fetch("/health")
  .then((r) => r.json())
  .then((health) => { $("model-name").textContent = health.model; })
  .catch(() => setStatus("The server does not answer /health.", true));

function setStatus(text, problem = false) {
  statusLine.textContent = text;
  statusLine.classList.toggle("problem", problem);
}

// ---------------------------------------------------------------- recording

let recording = null; // {recorder, chunks, stream, started, cancelled}
let busy = false; // one question at a time: the page shows answers in order

async function startRecording() {
  if (recording || busy) return;
  const session = { chunks: [], cancelled: false, started: 0 };
  recording = session;
  talk.classList.add("armed");
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
  } catch (err) {
    recording = null;
    talk.classList.remove("armed");
    setStatus(`No microphone: ${err.message}. Allow microphone access for this page and try again.`, true);
    return;
  }
  if (session.cancelled) { // let go before the microphone was ready
    stream.getTracks().forEach((t) => t.stop());
    recording = null;
    talk.classList.remove("armed");
    return;
  }
  session.stream = stream;
  session.recorder = new MediaRecorder(stream);
  session.recorder.addEventListener("dataavailable", (e) => { if (e.data.size) session.chunks.push(e.data); });
  session.recorder.start();
  session.started = performance.now();
  talk.classList.replace("armed", "recording");
  $("talk-label").textContent = "Listening…";
  setStatus("Listening — let go when you are done.");
}

async function stopRecording() {
  const session = recording;
  if (!session) return;
  session.cancelled = true;
  if (!session.recorder) return; // startRecording cleans up once the microphone answers
  recording = null;
  talk.classList.remove("recording");
  $("talk-label").textContent = "Hold to talk";
  const stopped = new Promise((resolve) => session.recorder.addEventListener("stop", resolve, { once: true }));
  session.recorder.stop();
  await stopped;
  session.stream.getTracks().forEach((t) => t.stop());
  const held = (performance.now() - session.started) / 1000;
  if (held < MIN_SECONDS) {
    setStatus("Hold the button down while you speak.", true);
    return;
  }
  const blob = new Blob(session.chunks, { type: session.recorder.mimeType });
  let wav;
  try {
    wav = await toWav(blob);
  } catch (err) {
    setStatus(`Could not read the recording: ${err.message}`, true);
    return;
  }
  await ask(wav);
}

/** The recording (webm/ogg from MediaRecorder) as 16-kHz mono 16-bit WAV bytes, with its duration. */
async function toWav(blob) {
  // decodeAudioData resamples to its context's rate: a 16-kHz offline context does the resampling
  const context = new OfflineAudioContext(1, 1, SAMPLE_RATE);
  const audio = await context.decodeAudioData(await blob.arrayBuffer());
  const channels = Array.from({ length: audio.numberOfChannels }, (_, c) => audio.getChannelData(c));
  const frames = audio.length;
  const view = new DataView(new ArrayBuffer(44 + 2 * frames));
  const text = (offset, s) => [...s].forEach((ch, i) => view.setUint8(offset + i, ch.charCodeAt(0)));
  text(0, "RIFF"); view.setUint32(4, 36 + 2 * frames, true); text(8, "WAVE");
  text(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, SAMPLE_RATE, true); view.setUint32(28, 2 * SAMPLE_RATE, true);
  view.setUint16(32, 2, true); view.setUint16(34, 16, true);
  text(36, "data"); view.setUint32(40, 2 * frames, true);
  for (let i = 0; i < frames; i++) {
    let sample = 0;
    for (const channel of channels) sample += channel[i];
    sample = Math.max(-1, Math.min(1, sample / channels.length));
    view.setInt16(44 + 2 * i, sample < 0 ? sample * 0x8000 : sample * 0x7fff, true);
  }
  return { blob: new Blob([view.buffer], { type: "audio/wav" }), seconds: frames / SAMPLE_RATE };
}

function base64(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result.slice(reader.result.indexOf(",") + 1));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

// ---------------------------------------------------------------- asking

/** The user turn's content parts: the training prompt for the chosen task around the audio clip. */
async function audioContent(wav, context) {
  const task = $("task").value === "transcribe" ? "transcribe" : context ? "context" : "answer";
  const prompt = PROMPTS[task];
  const text = { type: "text", text: prompt.text.replace("{context}", context) };
  const audio = { type: "input_audio", input_audio: { data: await base64(wav.blob), format: "wav" } };
  return prompt.audioFirst ? [audio, text] : [text, audio];
}

async function ask(wav) {
  const context = contextBox.value.trim();
  if (!wav && !context) {
    setStatus("Type a message first, or hold the button and speak.", true);
    return;
  }
  busy = true;
  talk.disabled = sendText.disabled = true;
  const turn = addTurn(wav, context);
  try {
    const content = wav ? await audioContent(wav, context) : context;
    if (!wav) contextBox.value = ""; // a sent message is gone from the box; a context stays for the next question
    await stream([{ role: "user", content }], turn);
    setStatus("Hold the button (or the space bar) while you speak, then let go.");
  } catch (err) {
    turn.element.classList.remove("pending");
    turn.answer.classList.add("problem");
    turn.answer.textContent = err.message;
    setStatus("The request failed; see the answer above.", true);
  } finally {
    busy = false;
    talk.disabled = sendText.disabled = false;
  }
}

/** POST the chat with `stream: true` and write each server-sent delta into the turn as it arrives. */
async function stream(messages, turn) {
  const headers = { "Content-Type": "application/json" };
  if (settings.key.value) headers.Authorization = `Bearer ${settings.key.value}`;
  const body = {
    messages,
    stream: true,
    stream_options: { include_usage: true },
    max_tokens: Number(settings.maxTokens.value) || 128,
  };
  setStatus("Thinking…");
  const sent = performance.now();
  const response = await fetch("/v1/chat/completions", { method: "POST", headers, body: JSON.stringify(body) });
  if (!response.ok) {
    const problem = await response.json().catch(() => ({}));
    const hint = response.status === 401 ? " Enter the server's API key under Settings." : "";
    throw new Error(`${problem.error?.message ?? `HTTP ${response.status}`}${hint}`);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let text = "";
  let first = null;
  let usage = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    const events = buffer.split("\n\n");
    buffer = events.pop();
    for (const event of events) {
      const data = event.replace(/^data: /, "");
      if (data === "[DONE]") continue;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) usage = chunk.usage;
      const piece = chunk.choices?.[0]?.delta?.content;
      if (piece) {
        first ??= performance.now();
        text += piece;
        turn.answer.textContent = text;
        turn.answer.scrollIntoView({ block: "nearest" });
      }
    }
  }
  const end = performance.now();
  turn.element.classList.remove("pending");
  if (!text) turn.answer.textContent = "(empty answer)";
  const parts = [];
  if (first !== null) parts.push(`first token ${Math.round(first - sent)} ms`);
  if (usage) {
    const tokens = usage.completion_tokens;
    parts.push(tokens === 1 ? "1 token" : `${tokens} tokens`);
    if (first !== null && tokens >= 4 && end > first) { // a rate from two or three tokens says nothing
      parts.push(`${((tokens - 1) / ((end - first) / 1000)).toFixed(0)} tokens/s`);
    }
  }
  turn.meta.textContent = parts.join(" · ");
  turn.meta.dataset.ttftMs = first === null ? "" : String(Math.round(first - sent));
}

// ---------------------------------------------------------------- the conversation

function addTurn(wav, context) {
  $("empty")?.remove();
  const element = document.createElement("section");
  element.className = "turn pending";
  const question = document.createElement("div");
  question.className = "question";
  if (wav) {
    const clip = document.createElement("div");
    clip.className = "clip";
    const player = document.createElement("audio");
    player.controls = true;
    player.src = URL.createObjectURL(wav.blob);
    const length = document.createElement("span");
    length.className = "hint";
    length.textContent = `${wav.seconds.toFixed(1)} s`;
    clip.append(player, length);
    question.append(clip);
  }
  if (context) {
    const words = document.createElement("p");
    words.className = wav ? "context" : "";
    words.textContent = context;
    question.append(words);
  }
  const answer = document.createElement("p");
  answer.className = "answer";
  answer.textContent = "…";
  const meta = document.createElement("p");
  meta.className = "meta hint";
  element.append(question, answer, meta);
  $("turns").append(element);
  element.scrollIntoView({ block: "end" });
  return { element, answer, meta };
}

// ---------------------------------------------------------------- controls

talk.addEventListener("pointerdown", (e) => {
  if (e.button !== 0) return;
  talk.setPointerCapture(e.pointerId); // letting go outside the button still stops the recording
  startRecording();
});
for (const type of ["pointerup", "pointercancel"]) talk.addEventListener(type, () => stopRecording());
talk.addEventListener("contextmenu", (e) => e.preventDefault()); // a long press on a phone is a hold, not a menu

const typing = () => ["TEXTAREA", "INPUT", "SELECT"].includes(document.activeElement?.tagName);
document.addEventListener("keydown", (e) => {
  if (e.code === "Space" && !e.repeat && !typing()) { e.preventDefault(); startRecording(); }
});
document.addEventListener("keyup", (e) => {
  if (e.code === "Space" && !typing()) { e.preventDefault(); stopRecording(); }
});
sendText.addEventListener("click", () => ask(null));
contextBox.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) ask(null);
});
if (!window.MediaRecorder || !navigator.mediaDevices?.getUserMedia) {
  talk.disabled = true;
  setStatus("This browser cannot record here (recording needs https or localhost). Text still works.", true);
}
