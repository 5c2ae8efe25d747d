// chatledger serve: the only script the pages load (the Content-Security-Policy allows
// no other). It streams a reply on the chat page with EventSource and moves the time
// travel slider. Text from the log is only ever inserted with textContent; the one
// exception is the finished reply, which the server rendered and sanitized (nh3).
"use strict";

document.documentElement.classList.add("js");

function timeTravel() {
  const form = document.getElementById("time-travel");
  if (!form) return;
  const slider = form.querySelector("input[type=range]");
  const output = document.getElementById(slider.dataset.output);
  slider.addEventListener("input", () => { output.textContent = slider.value; });
  slider.addEventListener("change", () => { form.requestSubmit(); });
}

function messageElement(role, text) {
  const content = document.createElement("div");
  content.className = "content role-" + role;
  const label = document.createElement("div");
  label.className = "role";
  label.textContent = role;
  const parts = document.createElement("div");
  parts.className = "parts";
  const part = document.createElement("div");
  part.className = "part " + (role === "user" ? "text" : "streaming");
  part.textContent = text;
  parts.appendChild(part);
  content.append(label, parts);
  return [content, part];
}

function chat() {
  const form = document.getElementById("send-form");
  if (!form) return;
  const history = document.getElementById("history");
  const status = document.getElementById("send-status");
  const button = document.getElementById("send");
  const textarea = document.getElementById("message");
  const version = document.getElementById("version");

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const text = String(data.get("message") || "");
    if (!text.trim()) return;
    button.disabled = true;
    status.textContent = "sending…";
    const [userContent] = messageElement("user", text);
    history.appendChild(userContent);
    let response;
    try {
      response = await fetch(form.action, {
        method: "POST",
        body: new URLSearchParams(data),
        headers: { "Accept": "application/json" },
        credentials: "same-origin",
      });
    } catch (error) {
      status.textContent = "could not reach the server: " + error;
      button.disabled = false;
      return;
    }
    if (!response.ok) {
      let message = response.status + " " + response.statusText;
      try { message = (await response.json()).error.message; } catch (_) { /* not JSON */ }
      status.textContent = "not sent: " + message;
      button.disabled = false;
      return;
    }
    textarea.value = "";
    const started = await response.json();
    const [reply, replyText] = messageElement("model", "");
    reply.classList.add("reply");
    reply.dataset.chunks = "0";
    history.appendChild(reply);
    status.textContent = "the model is answering…";
    const source = new EventSource(started.stream_url);
    source.addEventListener("chunk", (message) => {
      const chunk = JSON.parse(message.data);
      replyText.textContent += chunk.text;
      reply.dataset.chunks = String(Number(reply.dataset.chunks) + 1);
    });
    source.addEventListener("done", (message) => {
      const done = JSON.parse(message.data);
      source.close();
      replyText.classList.remove("streaming");
      replyText.classList.add("markdown");
      replyText.innerHTML = done.html;  // rendered and sanitized by the server
      reply.dataset.done = "true";
      if (version) version.textContent = String(done.version);
      status.textContent = "recorded at version " + done.version + ".";
      button.disabled = false;
    });
    source.addEventListener("error", (message) => {
      if (message.data === undefined) {
        if (source.readyState === EventSource.CLOSED) {
          status.textContent = "the connection to the server was lost";
          button.disabled = false;
        }
        return;  // EventSource reconnects by itself and resumes after the last chunk
      }
      const failure = JSON.parse(message.data);
      source.close();
      reply.dataset.failed = "true";
      status.textContent = "the send failed: " + failure.message;
      button.disabled = false;
    });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  timeTravel();
  chat();
});
