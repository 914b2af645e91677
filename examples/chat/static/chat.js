// The chat page: one websocket to /ws, JSON frames both ways (see app.py).
"use strict";

const $ = (id) => document.getElementById(id);
const nickBox = $("nick"), roomBox = $("room"), textBox = $("text"), sendButton = $("send");
const log = $("log"), roomList = $("rooms"), statusLine = $("status");

let socket = null;
let room = null; // the room this tab has joined, once the server said so
let layer = "";
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

function join(name) {
  localStorage.setItem("nick", nickBox.value.trim());
  send({ type: "join", room: name.trim(), nick: nickBox.value.trim() });
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
  welcome(frame) { layer = frame.layer; join(roomBox.value); },
  joined(frame) {
    room = frame.room;
    rooms.add(room);
    history.replaceState(null, "", "#" + encodeURIComponent(room));
    listRooms();
    log.replaceChildren();
    show("info", ["", `you are ${frame.nick} in ${room}`]);
    setStatus(`${room} · ${layer} layer · ${location.host}`);
    textBox.disabled = sendButton.disabled = false;
    textBox.focus();
  },
  message(frame) {
    if (frame.room !== room) return; // a late message from the room we just left
    const time = new Date(frame.time).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    show("message", ["time", time], ["nick", frame.nick], ["text", frame.text]);
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
    setTimeout(connect, 1000);
  };
}

$("join-form").onsubmit = (event) => { event.preventDefault(); join(roomBox.value); };
$("say").onsubmit = (event) => {
  event.preventDefault();
  if (textBox.value.trim()) send({ type: "message", text: textBox.value });
  textBox.value = "";
};
connect();
