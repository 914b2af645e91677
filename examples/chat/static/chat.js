// The chat page: one websocket to /ws, JSON frames both ways (see app.py).
"use strict";

const $ = (id) => document.getElementById(id);
const nickBox = $("nick"), roomBox = $("room"), textBox = $("text"), sendButton = $("send");
const log = $("log"), roomList = $("rooms"), statusLine = $("status");

// Milliseconds before reconnecting a closed socket: doubled after each failed try.
const RETRY_FIRST = 500, RETRY_MOST = 8000;

let socket = null;
let retryDelay = RETRY_FIRST;
let room = null; // the room this tab has joined, once the server said so
let shown = null; // the room the log shows: kept while the socket reconnects
let position = null; // the last shown message's position (history on): resume after it
let layer = "";
let keepsHistory = false;
const rooms = new Set();

nickBox.value = localStorage.getItem("nick") || "guest-" + Math.floor(Math.random() * 1000);
roomBox.value = decodeURIComponent(location.hash.slice(1)) || "lobby";

function show(className, ...parts) {
  const item = document.createElement("li");
  item.className = className;
  for (const [cls, text] of parts) {
    const span = document.createElement("span");
    span.className = cls;
    span.textContent = text; // never innerHTML: messages come from anyone
    item.append(span);
  }
  const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 5;
  log.append(item);
  if (atBottom) log.scrollTop = log.scrollHeight;
}

function setStatus(text) {
  statusLine.textContent = text;
}

function send(frame) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(frame));
}

// The nick field as typed; remembered for the next visit.
function currentNick() {
  const nick = nickBox.value.trim();
  if (nick) localStorage.setItem("nick", nick);
  return nick;
}

// Join `name`; with `since` (a message position), resume after that message.
function join(name, since = null) {
  const frame = { type: "join", room: name.trim(), nick: currentNick() };
  if (since) frame.since = since;
  send(frame);
}

function listRooms() {
  roomList.replaceChildren();
  for (const name of rooms) {
    const button = document.createElement("button");
    button.textContent = name;
    button.className = name === room ? "current" : "";
    button.onclick = () => { roomBox.value = name; join(name); };
    const item = document.createElement("li");
    item.append(button);
    roomList.append(item);
  }
}

const handlers = {
  welcome(frame) {
    layer = frame.layer;
    keepsHistory = frame.history;
    retryDelay = RETRY_FIRST;
    // Back after a reconnect: the log goes on where it stopped (with history on).
    if (shown !== null) join(shown, position);
    else join(roomBox.value);
  },
  joined(frame) {
    room = frame.room;
    rooms.add(room);
    history.replaceState(null, "", "#" + encodeURIComponent(room));
    listRooms();
    if (frame.resumed && shown === room) {
      show("info", ["", `reconnected to ${room}`]);
    } else {
      log.replaceChildren();
      position = null;
      show("info", ["", `you are ${frame.nick} in ${room}`]);
    }
    shown = room;
    setStatus(`${room} · ${layer} layer${keepsHistory ? " · history" : ""} · ${location.host}`);
    textBox.disabled = sendButton.disabled = false;
    textBox.focus();
  },
  history(frame) {
    if (frame.room !== room) return;
    for (const message of frame.messages) handlers.message(message);
  },
  message(frame) {
    if (frame.room !== room) return; // a late message from the room we just left
    const time = new Date(frame.time).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    show("message", ["time", time], ["nick", frame.nick], ["text", frame.text]);
    if (frame.position) position = frame.position;
  },
  notice(frame) { show("notice", ["", frame.text]); },
  error(frame) { show("error", ["", frame.error]); },
};

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/ws`);
  socket.onmessage = (event) => {
    const frame = JSON.parse(event.data);
    (handlers[frame.type] || (() => {}))(frame);
  };
  socket.onclose = () => {
    room = null;
    textBox.disabled = sendButton.disabled = true;
    setStatus("disconnected, retrying…");
    setTimeout(connect, retryDelay);
    retryDelay = Math.min(2 * retryDelay, RETRY_MOST);
  };
}

$("join-form").onsubmit = (event) => { event.preventDefault(); join(roomBox.value); };
$("say").onsubmit = (event) => {
  event.preventDefault();
  if (textBox.value.trim()) {
    const frame = { type: "message", text: textBox.value };
    const nick = currentNick(); // the nick field applies from this message on
    if (nick) frame.nick = nick;
    send(frame);
  }
  textBox.value = "";
};
connect();
