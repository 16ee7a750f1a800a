// Drive reelserve with the official npm @runware/sdk-js, exactly as a user would.
//
// node client.mjs '<json args>'  (args: url, api_key, image_path, scenarios, timeout seconds)
// Prints one JSON line mapping each scenario to {ok: true, items} or {ok: false, error}.
// The SDK forces deliveryMethod "async" for videoInference and polls getResponse every 2 s.
// It has no provider-settings classes: providerSettings is a plain object in its typings.
import { readFileSync } from "node:fs";
import { randomUUID } from "node:crypto";
import { Runware } from "@runware/sdk-js";

const args = JSON.parse(process.argv[2]);
const T2V = {
  model: "klingai:1@1",
  positivePrompt: "a paper boat drifting on a calm lake",
  duration: 5,
  width: 720,
  height: 720,
};

const pick = (item) => {
  const keys = ["taskType", "taskUUID", "status", "videoUUID", "videoURL", "seed", "cost"];
  return Object.fromEntries(keys.map((k) => [k, item?.[k] ?? null]));
};

// The SDK rejects with the server's error wrapped as {error: {...}} (or a plain Error/string).
const describe = (err) => {
  const e = err?.error ?? null;
  if (e && typeof e === "object") {
    return { type: "RunwareErrorObject", code: e.code ?? null, message: e.message ?? null,
             parameter: e.parameter ?? null, taskUUID: e.taskUUID ?? null, taskType: e.taskType ?? null };
  }
  return { type: err?.constructor?.name ?? typeof err, code: null, message: String(err?.message ?? err) };
};

const withTimeout = (promise, seconds) =>
  Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out after ${seconds}s`)), seconds * 1000)),
  ]);

async function scenario(client, name) {
  const list = (r) => (Array.isArray(r) ? r : [r]).map(pick);
  switch (name) {
    case "async":
      return list(await client.videoInference({ ...T2V }));
    case "sync2":
      // The SDK overrides deliveryMethod with "async" and polls until 2 distinct videos arrived.
      return list(await client.videoInference({ ...T2V, deliveryMethod: "sync", numberResults: 2 }));
    case "frame_file": {
      const image = "data:image/png;base64," + readFileSync(args.image_path).toString("base64");
      return list(await client.videoInference({
        ...T2V, positivePrompt: "the scene comes alive",
        inputs: { frameImages: [{ image, frame: "first" }] },
      }));
    }
    case "camera":
      return list(await client.videoInference({
        ...T2V, providerSettings: { klingai: { cameraControl: { type: "simple", config: { zoom: 5 } } } },
      }));
    case "bad_size":
      return list(await client.videoInference({ ...T2V, width: 1000, height: 1000 }));
    case "unknown_model":
      return list(await client.videoInference({ ...T2V, model: "klingai:99@9" }));
    case "unknown_task":
      return list(await client.getResponse({ taskUUID: randomUUID() }));
    default:
      throw new Error(`unknown scenario ${name}`);
  }
}

async function timed(fn) {
  const start = Date.now();
  let out;
  try {
    out = { ok: true, items: await withTimeout(fn(), args.timeout ?? 60) };
  } catch (err) {
    out = { ok: false, error: describe(err) };
  }
  out.elapsed = (Date.now() - start) / 1000;
  return out;
}

const results = {};
const names = args.scenarios;
if (names.includes("bad_key")) {
  const bad = new Runware({ apiKey: "definitely-not-a-valid-key", url: args.url, shouldReconnect: false });
  results.bad_key = await timed(async () => list0(await bad.videoInference({ ...T2V })));
  await bad.disconnect();
}
function list0(r) { return (Array.isArray(r) ? r : [r]).map(pick); }
const rest = names.filter((n) => n !== "bad_key");
if (rest.length) {
  const client = new Runware({ apiKey: args.api_key, url: args.url });
  const outs = await Promise.all(rest.map((n) => timed(() => scenario(client, n))));
  rest.forEach((n, i) => { results[n] = outs[i]; });
  await client.disconnect();
}
console.log(JSON.stringify(results));
process.exit(0);
