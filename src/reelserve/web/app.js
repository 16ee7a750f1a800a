// reelserve playground. Speaks the Runware task protocol to this server's POST /v1
// (modelSearch, imageUpload, videoInference async, getResponse, getTaskDetails) and reads this
// key's history from the task API (GET /v1/tasks, POST /v1/tasks/{taskUUID}/cancel); no other
// origin is contacted, so the page works offline and under a strict Content-Security-Policy.
"use strict";

(() => {
  const ENDPOINT = "/v1";
  const TASKS_ENDPOINT = "/v1/tasks";
  const KEY_STORAGE = "reelserve.apiKey";
  const HISTORY_STORAGE = "reelserve.history";
  const HISTORY_SIZE = 20;
  const POLL_MS = 1000;
  // Kling camera control (catalog: [camera] in models.toml; a test keeps these equal to it).
  const CAMERA_TYPES = ["simple", "down_back", "forward_up", "right_turn_forward", "left_turn_forward"];
  const CAMERA_AXES = ["horizontal", "vertical", "pan", "tilt", "roll", "zoom"];

  const $ = (id) => document.getElementById(id);
  let models = [];

  class ApiError extends Error {
    constructor(error) {
      super(error.message || error.code || "request failed");
      this.code = error.code || "unknownError";
      this.parameter = error.parameter || null;
      this.allowedValues = error.allowedValues || null;
    }
  }

  // crypto.randomUUID exists only in secure contexts (https or localhost); a server reached
  // over plain http on a LAN address still needs UUID v4 task ids.
  function uuid4() {
    if (window.crypto.randomUUID) return window.crypto.randomUUID();
    const b = window.crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function authHeaders() {
    const headers = { "Content-Type": "application/json" };
    const key = sessionStorage.getItem(KEY_STORAGE);
    if (key) headers.Authorization = `Bearer ${key}`;
    return headers;
  }

  // One task per request: the reply's data items, or its first error thrown as ApiError.
  async function call(task) {
    const headers = authHeaders();
    const resp = await fetch(ENDPOINT, { method: "POST", headers, body: JSON.stringify([task]) });
    let body;
    try {
      body = await resp.json();
    } catch (_) {
      throw new ApiError({ code: "invalidServerResponse", message: `HTTP ${resp.status}, not JSON` });
    }
    const errors = body.errors || [];
    if (resp.status === 401) {
      askForKey(errors[0]);
      throw new ApiError(errors[0] || { code: "invalidApiKey", message: "an API key is needed" });
    }
    if (errors.length) throw new ApiError(errors[0]);
    return body.data || [];
  }

  // ------------------------------------------------------------------ status line

  function say(text, isError = false) {
    const message = $("message");
    message.textContent = text;
    message.classList.toggle("error", isError);
  }

  function describe(err) {
    if (!(err instanceof ApiError)) return `error: ${err.message || err}`;
    let text = `${err.code}: ${err.message}`;
    if (err.parameter) text += ` (parameter: ${err.parameter})`;
    if (err.allowedValues) text += `; allowed: ${err.allowedValues.join(", ")}`;
    return text;
  }

  function setProgress(percent) {
    const bar = $("progress");
    bar.hidden = percent === null;
    if (percent !== null) bar.value = percent;
  }

  // ------------------------------------------------------------------ API key

  function askForKey(error) {
    $("key-panel").hidden = false;
    $("key-message").textContent = error && error.message
      ? `This server asks for an API key: ${error.message}`
      : "This server asks for an API key.";
    $("api-key").focus();
  }

  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
    $("api-key").value = "";
    $("key-panel").hidden = true;
    $("change-key").hidden = false;
    loadModels();
    loadHistory();
  });

  $("change-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    askForKey(null);
  });

  // ------------------------------------------------------------------ models and form

  function option(value, label) {
    const el = document.createElement("option");
    el.value = String(value);
    el.textContent = label === undefined ? String(value) : label;
    return el;
  }

  function fillSelect(select, values, labels) {
    const previous = select.value;
    select.replaceChildren(...values.map((v, i) => option(v, labels ? labels[i] : undefined)));
    if (values.map(String).includes(previous)) select.value = previous;
  }

  async function loadModels() {
    say("loading models…");
    try {
      const [item] = await call({ taskType: "modelSearch", taskUUID: uuid4(), limit: 100, offset: 0 });
      models = item.results || [];
      fillSelect($("model"), models.map((m) => m.air), models.map((m) => `${m.air} — ${m.name}`));
      if (sessionStorage.getItem(KEY_STORAGE)) $("change-key").hidden = false;
      $("submit").disabled = models.length === 0;
      updateForm();
      say(models.length ? "" : "this server lists no models");
    } catch (err) {
      say(describe(err), true);
    }
  }

  function currentModel() {
    return models.find((m) => m.air === $("model").value) || null;
  }

  // The workflow the current inputs make: first and last frame, first frame, or text only.
  function currentWorkflow(model) {
    const hasFirst = $("first-frame").files.length > 0;
    const hasLast = $("last-frame").files.length > 0;
    let workflow = hasLast ? "flf2v" : hasFirst ? "i2v" : "t2v";
    if (!model.workflows.includes(workflow) && workflow === "flf2v" && model.workflows.includes("i2v")) {
      workflow = "i2v"; // a last frame the model cannot take: the server names the problem
    }
    return workflow;
  }

  function updateForm() {
    const model = currentModel();
    if (!model) return;
    const workflows = model.workflows || [];
    const imageModel = workflows.includes("i2v") || workflows.includes("flf2v");
    $("first-frame-field").hidden = !imageModel;
    $("last-frame-field").hidden = !(model.framePositions || []).includes("last");
    if ($("last-frame-field").hidden) $("last-frame").value = "";
    // Text only is not possible on an image-only model: the first frame is then required.
    $("first-frame").required = !workflows.includes("t2v");

    const workflow = currentWorkflow(model);
    const durations = (model.durations || {})[workflow] || Object.values(model.durations || {})[0] || [];
    fillSelect($("duration"), durations);

    const sizes = model.sizes || [];
    $("size-field").hidden = model.sizeFromFirstFrame || sizes.length === 0;
    fillSelect($("size"), sizes);

    $("prompt").required = (model.promptRequired || []).includes(workflow);

    // Camera control only where the model takes it (providerSettings.klingai.cameraControl).
    const camera = (model.providerSettings || []).includes("cameraControl");
    $("camera-field").hidden = !camera;
    if (!camera) $("camera-type").value = "";
    updateCamera();

    const fps = (model.fps || {})[workflow];
    const price = model.price ? ` · ${model.price.base} USD per ${model.price.unit}` : "";
    const sizeNote = model.sizeFromFirstFrame ? " · size follows the first frame" : "";
    $("model-info").textContent =
      `${model.name}: ${workflows.join(", ")}${fps ? ` · ${fps} fps` : ""}${price}${sizeNote}`;
  }

  function updateCamera() {
    const type = $("camera-type").value;
    const simple = type === "simple" && !$("camera-field").hidden;
    $("camera-axis-field").hidden = !simple;
    $("camera-value-field").hidden = !simple;
  }

  function fillCamera() {
    fillSelect($("camera-type"), ["", ...CAMERA_TYPES],
      ["none", ...CAMERA_TYPES.map((t) => (t === "simple" ? "move on one axis" : t.replaceAll("_", " ")))]);
    fillSelect($("camera-axis"), CAMERA_AXES);
    $("camera-axis").value = "zoom";
  }

  // The wire cameraControl for the form, or null (none chosen or the model takes none).
  function cameraControl() {
    const type = $("camera-type").value;
    if (!type || $("camera-field").hidden) return null;
    if (type !== "simple") return { type };
    return { type, config: { [$("camera-axis").value]: Number($("camera-value").value) } };
  }

  // Previews of the chosen first and last frames (local files: blob: URLs, nothing uploaded).
  function showPreview(input, img) {
    if (img.src) URL.revokeObjectURL(img.src);
    const file = input.files[0];
    img.hidden = !file;
    if (file) img.src = URL.createObjectURL(file);
    else img.removeAttribute("src");
  }

  function clearResult() {
    $("results").replaceChildren();
    setProgress(null);
    say("");
  }

  $("model").addEventListener("change", () => {
    clearResult(); // the shown videos belong to the previous model
    updateForm();
  });
  $("first-frame").addEventListener("change", () => {
    showPreview($("first-frame"), $("first-preview"));
    updateForm();
  });
  $("last-frame").addEventListener("change", () => {
    showPreview($("last-frame"), $("last-preview"));
    updateForm();
  });
  $("camera-type").addEventListener("change", updateCamera);

  // ------------------------------------------------------------------ generate

  function readAsDataURL(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(file);
    });
  }

  async function uploadImage(file) {
    const [item] = await call({ taskType: "imageUpload", taskUUID: uuid4(), image: await readAsDataURL(file) });
    return item.imageUUID;
  }

  // A looping, muted player with a caption: a fresh result or one replayed from the history.
  function videoFigure(src, text) {
    const figure = document.createElement("figure");
    const video = document.createElement("video");
    video.controls = true;
    video.loop = true;
    video.muted = true;
    video.autoplay = true;
    video.playsInline = true;
    video.src = src;
    const caption = document.createElement("figcaption");
    caption.textContent = text;
    figure.append(video, caption);
    return { figure, caption };
  }

  function showResult(item) {
    const cost = typeof item.cost === "number" ? ` · ${item.cost} USD` : "";
    const { figure, caption } = videoFigure(item.videoURL, `seed ${item.seed}${cost} · `);
    const link = document.createElement("a");
    link.href = item.videoURL;
    link.download = "";
    link.textContent = "download";
    caption.append(link);
    $("results").append(figure);
  }

  // Poll getResponse until every requested video arrived. Each success item is handed out
  // once; a poll with no item at all means another poller took them, so read getTaskDetails.
  async function waitForResults(taskUUID, expected) {
    const seen = new Set();
    const take = (items) => {
      for (const item of items) {
        if (item.status === "success" && !seen.has(item.videoUUID)) {
          seen.add(item.videoUUID);
          showResult(item);
        } else if (item.status === "processing" && typeof item.progress === "number") {
          setProgress(item.progress);
          say(`generating… ${item.progress}%`);
        }
      }
    };
    while (seen.size < expected) {
      await sleep(POLL_MS);
      const data = await call({ taskType: "getResponse", taskUUID });
      if (data.length === 0) {
        const [details] = await call({ taskType: "getTaskDetails", taskUUID });
        const response = details.response || {};
        if ((response.errors || []).length) throw new ApiError(response.errors[0]);
        take(response.data || []);
        if (details.status !== "processing" && seen.size < expected) {
          throw new ApiError({ code: "incompleteResults", message: `the task ended with ${seen.size} of ${expected} videos` });
        }
      } else {
        take(data);
      }
      if (seen.size > 0 && seen.size < expected) say(`${seen.size} of ${expected} videos ready…`);
    }
  }

  $("generate-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const model = currentModel();
    if (!model) return;
    $("submit").disabled = true;
    $("results").replaceChildren();
    $("message").classList.remove("error");
    setProgress(0);
    const started = Date.now();
    try {
      const frames = [];
      if ($("first-frame").files.length) {
        say("uploading the first frame…");
        frames.push({ image: await uploadImage($("first-frame").files[0]), frame: "first" });
      }
      if ($("last-frame").files.length && !$("last-frame-field").hidden) {
        say("uploading the last frame…");
        frames.push({ image: await uploadImage($("last-frame").files[0]), frame: "last" });
      }
      const expected = Number($("number-results").value);
      const task = {
        taskType: "videoInference",
        taskUUID: uuid4(),
        model: model.air,
        deliveryMethod: "async",
        includeCost: true,
        numberResults: expected,
        outputFormat: $("format").value,
        duration: Number($("duration").value),
      };
      const prompt = $("prompt").value.trim();
      if (prompt) task.positivePrompt = prompt;
      const negative = $("negative-prompt").value.trim();
      if (negative) task.negativePrompt = negative;
      if (!$("size-field").hidden && $("size").value) {
        const [width, height] = $("size").value.split("x").map(Number);
        task.width = width;
        task.height = height;
      }
      if ($("seed").value !== "") task.seed = Number($("seed").value);
      if ($("cfg-scale").value !== "") task.CFGScale = Number($("cfg-scale").value);
      const camera = cameraControl();
      if (camera) task.providerSettings = { klingai: { cameraControl: camera } };
      if (frames.length) task.inputs = { frameImages: frames };

      say("submitting…");
      await call(task);
      currentTask = task.taskUUID;
      $("cancel-current").hidden = false;
      say("queued…");
      loadHistory();
      await waitForResults(task.taskUUID, expected);
      setProgress(100);
      say(`done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    } catch (err) {
      setProgress(null);
      say(describe(err), true);
    } finally {
      currentTask = null;
      $("cancel-current").hidden = true;
      $("submit").disabled = models.length === 0;
      loadHistory();
    }
  });

  // ------------------------------------------------------------------ history (GET /v1/tasks)

  let currentTask = null;
  let historyTimer = null;

  // The history is cached per key (a short hash, never the key itself) so it shows at once
  // after a reload; the server's list replaces it as soon as it arrives.
  function historyKey() {
    const key = sessionStorage.getItem(KEY_STORAGE) || "";
    let hash = 5381;
    for (let i = 0; i < key.length; i += 1) hash = ((hash * 33) ^ key.charCodeAt(i)) >>> 0;
    return `${HISTORY_STORAGE}.${hash.toString(16)}`;
  }

  async function tasksRequest(path, method) {
    const resp = await fetch(TASKS_ENDPOINT + path, { method, headers: authHeaders() });
    let body;
    try {
      body = await resp.json();
    } catch (_) {
      throw new ApiError({ code: "invalidServerResponse", message: `HTTP ${resp.status}, not JSON` });
    }
    if (!resp.ok) {
      const error = (body.errors || [])[0] || body.error || { code: "httpError", message: `HTTP ${resp.status}` };
      throw new ApiError(error);
    }
    return body;
  }

  const ACTIVE = ["queued", "running", "cancelling"];

  function renderHistory(entries) {
    const list = $("history");
    list.replaceChildren(...entries.map((entry) => {
      const li = document.createElement("li");
      li.className = `task ${entry.status}`;
      li.dataset.taskUuid = entry.taskUUID;
      const head = document.createElement("div");
      const status = document.createElement("strong");
      status.className = "task-status";
      status.textContent = entry.status;
      const what = document.createElement("span");
      const when = (entry.createdAt || "").replace("T", " ").slice(0, 19);
      what.textContent = ` ${entry.model} · ${entry.origin} · ${when} UTC · ${entry.prompt || "(no prompt)"}`;
      head.append(status, what);
      li.append(head);
      if (ACTIVE.includes(entry.status)) {
        const bar = document.createElement("progress");
        bar.max = 100;
        bar.value = entry.progress;
        bar.className = "task-progress";
        const cancel = document.createElement("button");
        cancel.type = "button";
        cancel.className = "task-cancel";
        cancel.textContent = "cancel";
        cancel.addEventListener("click", () => cancelTask(entry.taskUUID));
        li.append(bar, cancel);
      }
      if (entry.error) {
        const error = document.createElement("p");
        error.className = "task-error";
        error.textContent = `${entry.error.code}: ${entry.error.message}`;
        li.append(error);
      }
      (entry.results || []).forEach((result, index) => {
        const play = document.createElement("button");
        play.type = "button";
        play.className = "task-play";
        play.textContent = `play ${index + 1}`;
        play.addEventListener("click", () => playResult(entry, result));
        const link = document.createElement("a");
        link.className = "task-download";
        link.href = result.url;
        link.download = "";
        link.textContent = `download ${index + 1}`;
        li.append(play, " ", link, " ");
      });
      return li;
    }));
  }

  function playResult(entry, result) {
    $("results").replaceChildren(videoFigure(result.url, `${entry.model} · seed ${result.seed}`).figure);
  }

  async function loadHistory() {
    const cacheKey = historyKey();
    try {
      const page = await tasksRequest(`?limit=${HISTORY_SIZE}`, "GET");
      localStorage.setItem(cacheKey, JSON.stringify(page.data));
      renderHistory(page.data);
      clearTimeout(historyTimer);
      // Follow running tasks (progress, end) while any is active.
      if (page.data.some((entry) => ACTIVE.includes(entry.status))) {
        historyTimer = setTimeout(loadHistory, POLL_MS);
      }
    } catch (err) {
      const cached = localStorage.getItem(cacheKey);
      if (cached) renderHistory(JSON.parse(cached));
    }
  }

  async function cancelTask(taskUUID) {
    try {
      await tasksRequest(`/${encodeURIComponent(taskUUID)}/cancel`, "POST");
    } catch (err) {
      say(describe(err), true);
    }
    loadHistory();
  }

  $("cancel-current").addEventListener("click", () => {
    if (currentTask) cancelTask(currentTask);
  });
  $("history-refresh").addEventListener("click", loadHistory);

  // Show the cached history at once, then the server's.
  const cachedHistory = localStorage.getItem(historyKey());
  if (cachedHistory) renderHistory(JSON.parse(cachedHistory));
  fillCamera();
  loadModels();
  loadHistory();
})();
