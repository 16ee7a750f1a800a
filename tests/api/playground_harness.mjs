// Runs the playground's app.js in Node against a real reelserve server, with a minimal DOM
// built from index.html (elements by id, <select> options, file inputs, events). Used by
// tests/api/test_playground.py: `node playground_harness.mjs <scenario.json>`.
//
// The scenario names the server, the page's files and the steps: set field values, attach
// image files, submit a form, then wait until the status line says "done" or shows an error.
// The final state (status line, progress, result videos, option lists) is printed as JSON.
import { readFileSync } from "node:fs";

const scenario = JSON.parse(readFileSync(process.argv[2], "utf8"));
const html = readFileSync(scenario.index, "utf8");
const source = readFileSync(scenario.script, "utf8");

class Element {
  constructor(tag, attrs = {}) {
    this.tagName = tag.toUpperCase();
    this.id = attrs.id || "";
    this.type = attrs.type || "";
    this.hidden = "hidden" in attrs;
    this.required = "required" in attrs;
    this.disabled = "disabled" in attrs;
    this.children = [];
    this.listeners = {};
    this.files = [];
    this.classes = new Set();
    this.classList = { toggle: (name, on) => (on ? this.classes.add(name) : this.classes.delete(name)) };
    this.ownText = "";
    this._value = attrs.value || "";
  }
  get value() {
    if (this.tagName !== "SELECT") return this._value;
    const values = this.children.map((c) => c.value);
    return values.includes(this._value) ? this._value : values[0] || "";
  }
  set value(v) {
    if (this.type === "file" && v === "") this.files = [];
    this._value = String(v);
  }
  get textContent() {
    return this.ownText + this.children.map((c) => c.textContent).join("");
  }
  set textContent(text) {
    this.ownText = String(text);
    this.children = [];
  }
  addEventListener(type, fn) {
    (this.listeners[type] ||= []).push(fn);
  }
  async dispatch(type) {
    for (const fn of this.listeners[type] || []) await fn({ preventDefault() {}, target: this });
  }
  replaceChildren(...nodes) {
    this.children = nodes;
  }
  append(...nodes) {
    this.children.push(...nodes);
  }
  focus() {}
}

// Elements with an id, from the page itself; <option>s of each <select> keep their text.
const byId = new Map();
const tagRe = /<(\w+)([^>]*)>/g;
let match;
let openSelect = null;
while ((match = tagRe.exec(html)) !== null) {
  const [, tag, rest] = match;
  const attrs = {};
  for (const a of rest.matchAll(/([\w-]+)(?:="([^"]*)")?/g)) attrs[a[1]] = a[2] ?? "";
  if (tag === "option" && openSelect) {
    const text = html.slice(tagRe.lastIndex, html.indexOf("<", tagRe.lastIndex));
    const option = new Element("option", { value: attrs.value ?? text });
    option.textContent = text;
    openSelect.children.push(option);
    continue;
  }
  if (!attrs.id) continue;
  const el = new Element(tag, attrs);
  byId.set(attrs.id, el);
  openSelect = tag === "select" ? el : null;
}

const storage = new Map();
const sessionStorage = {
  getItem: (k) => (storage.has(k) ? storage.get(k) : null),
  setItem: (k, v) => storage.set(k, String(v)),
  removeItem: (k) => storage.delete(k),
};
const document = {
  getElementById: (id) => byId.get(id) || null,
  createElement: (tag) => new Element(tag),
};
const window = { crypto: globalThis.crypto };
const fetchSameOrigin = (url, options) => globalThis.fetch(new URL(url, scenario.server), options);

class FileReader {
  readAsDataURL(blob) {
    blob.arrayBuffer().then((buffer) => {
      this.result = `data:${blob.type};base64,${Buffer.from(buffer).toString("base64")}`;
      this.onload();
    }, (err) => {
      this.error = err;
      this.onerror();
    });
  }
}

new Function("window", "document", "sessionStorage", "fetch", "FileReader", source)(
  window, document, sessionStorage, fetchSameOrigin, FileReader);

const $ = (id) => byId.get(id);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(check, what) {
  const deadline = Date.now() + (scenario.timeout_ms || 120000);
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${$("message").textContent}`);
    await sleep(50);
  }
}

// The form handlers are awaited through dispatch(); only the model list loads in the background.
const idle = () => $("message").textContent !== "loading models…";
const options = (id) => $(id).children.map((c) => c.value);

await until(idle, "the first modelSearch");
for (const step of scenario.steps) {
  if (step.set) {
    for (const [id, value] of Object.entries(step.set)) {
      $(id).value = value;
      await $(id).dispatch("change");
    }
  }
  if (step.files) {
    for (const [id, path] of Object.entries(step.files)) {
      $(id).files = [new Blob([readFileSync(path)], { type: "image/png" })];
      await $(id).dispatch("change");
    }
  }
  if (step.submit) {
    await $(step.submit).dispatch("submit");
    await until(idle, "modelSearch");
  }
}

console.log(JSON.stringify({
  message: $("message").textContent,
  error: $("message").classes.has("error"),
  keyPanelShown: !$("key-panel").hidden,
  progress: $("progress").hidden ? null : Number($("progress").value),
  models: options("model"),
  durations: options("duration"),
  sizes: options("size"),
  sizeHidden: $("size-field").hidden,
  lastFrameHidden: $("last-frame-field").hidden,
  firstFrameRequired: $("first-frame").required,
  results: $("results").children.map((figure) => ({
    src: figure.children[0].src,
    caption: figure.children[1].textContent,
  })),
}));
