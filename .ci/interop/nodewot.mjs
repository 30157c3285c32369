// node-wot 0.9 (Eclipse Thingweb) as a consumer of `wot serve` over HTTP, with node-wot's own
// defaults: no formIndex anywhere, so node-wot picks each operation's form itself.
//
//   node nodewot.mjs <http origin> <directory holding node_modules with @node-wot/*>
//
// For the directory TD and every bundled thing: requestThingDescription (node-wot validates the
// TD against its TD schema), consume, read, write, invoke, observeProperty and subscribeEvent,
// asserting that the change this script causes arrives. An EventSource on the TD's SSE form
// checks that the WoT Profile's named events are still sent. Exits non-zero on the first failure;
// every wait has a deadline. At the end every subscription is stopped and node must exit by itself.
import { createRequire } from "node:module";
import path from "node:path";

const [origin, modules] = process.argv.slice(2);
if (!origin || !modules) {
  console.error("usage: node nodewot.mjs <http origin> <dir with node_modules>");
  process.exit(2);
}
const require = createRequire(path.join(path.resolve(modules), "package.json"));
const { Servient } = require("@node-wot/core");
const { HttpClientFactory } = require("@node-wot/binding-http");
const EventSource = require("eventsource");

const fail = (message) => {
  console.error(`nodewot interop FAILED: ${message}`);
  process.exit(1);
};
process.on("unhandledRejection", (e) => fail(`unhandled rejection: ${e?.stack ?? e}`));

// Rejects when `promise` has not settled within `ms`.
const within = (ms, promise, what) => {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
};
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const assert = (condition, message) => {
  if (!condition) throw new Error(message);
};

// A listener for observeProperty/subscribeEvent that resolves `wait(predicate)` with the first
// value matching it. Values that do not decode are failures, not noise.
function collector(what) {
  const seen = [];
  let waiting = null;
  const listener = async (output) => {
    let value;
    try {
      value = await output.value();
    } catch (e) {
      fail(`${what}: a notification did not decode: ${e.message}`);
    }
    seen.push(value);
    if (waiting && waiting.predicate(value)) waiting.resolve(value);
  };
  const wait = (predicate) =>
    new Promise((resolve) => {
      const hit = seen.find(predicate);
      if (hit !== undefined) return resolve(hit);
      waiting = { predicate, resolve };
    });
  return { listener, wait, seen };
}

// node-wot's longpoll sends its first GET only after the HEAD handshake has resolved the
// subscription, so a change made at once can land before that GET arrives. Cause the change
// again (with a fresh value) until one arrives, and fail after `tries`.
async function causeUntilSeen(what, wait, cause, tries = 8) {
  for (let i = 0; i < tries; i++) {
    const expected = await cause(i);
    try {
      const seen = await within(1500, wait((v) => v === expected), `${what} = ${expected}`);
      if (i > 0) console.log(`${what}: seen after ${i + 1} changes`);
      return seen;
    } catch {
      // not seen yet: cause it again
    }
  }
  throw new Error(`${what}: no notification after ${tries} changes`);
}

async function httpJson(url, init) {
  const r = await fetch(url, init);
  assert(r.ok, `${init?.method ?? "GET"} ${url}: ${r.status}`);
  return r.status === 204 ? undefined : r.json();
}

const firstForm = (forms, op) => forms.find((f) => [].concat(f.op ?? []).includes(op));

// The WoT Profile's SSE form still names its events: an EventSource listening for the
// affordance's name receives the change.
async function profileSse(td, kind, name, cause) {
  const form = td[kind][name].forms.find(
    (f) => f.subprotocol === "sse" && [].concat(f.op).some((op) => op === "observeproperty" || op === "subscribeevent"),
  );
  assert(form, `${td.title}: ${kind}/${name} has no SSE form`);
  const href = new URL(form.href, td.base).href;
  const source = new EventSource(href);
  try {
    const got = new Promise((resolve) => source.addEventListener(name, (e) => resolve(JSON.parse(e.data))));
    await within(5000, new Promise((resolve, reject) => {
      source.onopen = resolve;
      source.onerror = (e) => reject(new Error(`EventSource ${href}: ${e.message ?? e.status ?? "error"}`));
    }), `EventSource open ${href}`);
    const expected = await cause();
    const value = await within(10000, got, `named SSE event '${name}' from ${href}`);
    assert(value === expected, `SSE ${name}: got ${value}, expected ${expected}`);
  } finally {
    source.close();
  }
}

async function main() {
  const servient = new Servient();
  servient.addClientFactory(new HttpClientFactory(null));
  const WoT = await servient.start();

  // The directory TD: node-wot validates it, and reads its `things` property.
  const directoryTd = await within(10000, WoT.requestThingDescription(`${origin}/.well-known/wot`), "directory TD");
  const directory = await WoT.consume(directoryTd);
  const listed = await (await within(10000, directory.readProperty("things"), "read things")).value();
  const plain = await httpJson(`${origin}/things`);
  assert(Array.isArray(listed) && listed.length === plain.length && plain.length >= 3,
    `directory 'things' has ${listed?.length} TDs, GET /things ${plain.length}`);
  const urls = directoryTd.links.filter((l) => l.rel === "item").map((l) => new URL(l.href, directoryTd.base).href);
  assert(urls.length === plain.length, `${urls.length} item links for ${plain.length} things`);
  console.log(`directory: ${urls.length} things`);

  const subscriptions = [];
  for (const url of urls) {
    const td = await within(10000, WoT.requestThingDescription(url), `TD ${url}`);
    const thing = await WoT.consume(td);
    const t = td.title;
    const props = Object.entries(td.properties ?? {});

    // read: every readable property, compared with a plain GET of the same form
    for (const [name, p] of props.filter(([, p]) => !p.writeOnly)) {
      const value = await (await within(5000, thing.readProperty(name), `read ${t}.${name}`)).value();
      assert(value !== undefined && value !== null, `${t}.${name} read nothing`);
      const form = firstForm(p.forms, "readproperty");
      const direct = await httpJson(new URL(form.href, td.base).href);
      assert(typeof direct === typeof value, `${t}.${name}: node-wot read ${value}, GET ${direct}`);
    }

    // write + observe: a writable observable property, numeric or boolean
    const writable = props.find(([, p]) => !p.readOnly && p.observable);
    if (writable) {
      const [name, p] = writable;
      const next = (i) =>
        p.type === "boolean" ? i % 2 === 0 : Math.min(p.maximum ?? 100, (p.minimum ?? 0) + 10 + i);
      const c = collector(`${t}.${name}`);
      const sub = await within(5000, thing.observeProperty(name, c.listener), `observeProperty ${t}.${name}`);
      subscriptions.push(sub);
      const current = await (await thing.readProperty(name)).value();
      const seen = await causeUntilSeen(`observeProperty ${t}.${name}`, c.wait, async (i) => {
        let v = next(i);
        if (v === current && p.type === "boolean") v = !v;
        await within(5000, thing.writeProperty(name, v), `write ${t}.${name}`);
        const back = await (await thing.readProperty(name)).value();
        assert(back === v, `${t}.${name}: wrote ${v}, read back ${back}`);
        return v;
      });
      console.log(`${t}: read, wrote and observed ${name} (${seen})`);
      await profileSse(td, "properties", name, async () => {
        const v = p.type === "boolean" ? !(await (await thing.readProperty(name)).value()) : next(20);
        await thing.writeProperty(name, v);
        return v;
      });
      console.log(`${t}: EventSource got the named SSE event for ${name}`);
    } else {
      // read-only: observe one that changes by itself
      const [name] = props.find(([, p]) => p.observable && p.title?.match(/uptime/i)) ?? props.find(([, p]) => p.observable);
      const c = collector(`${t}.${name}`);
      const sub = await within(5000, thing.observeProperty(name, c.listener), `observeProperty ${t}.${name}`);
      subscriptions.push(sub);
      const first = await within(10000, c.wait(() => true), `a change of ${t}.${name}`);
      console.log(`${t}: observed ${name} (${first}) without writing, it is read-only`);
      let refused = false;
      try {
        await thing.writeProperty(name, first);
      } catch {
        refused = true;
      }
      // the TD offers no write form for it, so node-wot has nothing to write with
      assert(refused, `${t}.${name} is read-only, yet node-wot wrote it`);
    }

    // invoke: a synchronous action's output is the value it changed
    for (const [name, a] of Object.entries(td.actions ?? {}).filter(([, a]) => a.synchronous && !a.input)) {
      const out = await (await within(5000, thing.invokeAction(name), `invoke ${t}.${name}`)).value();
      const changed = Object.keys(td.properties).find((k) => td.properties[k].type === typeof out);
      const now = await (await thing.readProperty(changed)).value();
      assert(out === now, `${t}.${name} returned ${out}, ${changed} is ${now}`);
      console.log(`${t}: invoked ${name} → ${out}`);
    }

    // subscribe: an event this script causes
    for (const [name] of Object.entries(td.events ?? {})) {
      if (t === "Thermostat" && name === "overheating") {
        // It fires when the temperature passes 25 °C and again only after it fell below
        // 24.5 °C: cool the room first, in case it is already warm.
        await thing.writeProperty("target", 5);
        await within(30000, (async () => {
          while ((await (await thing.readProperty("temperature")).value()) >= 24.5) await sleep(250);
        })(), `${t} cools below 24.5 °C`);
      }
      const c = collector(`${t}.${name}`);
      const sub = await within(5000, thing.subscribeEvent(name, c.listener), `subscribeEvent ${t}.${name}`);
      subscriptions.push(sub);
      let seen;
      if (t === "Lamp" && name === "faded") {
        // fade (asynchronous) ramps the brightness and emits `faded` with the level reached
        seen = await causeUntilSeen(`subscribeEvent ${t}.${name}`, c.wait, async (i) => {
          const level = 20 + i;
          await within(5000, thing.invokeAction("fade", { level, duration: 0 }), `invoke ${t}.fade`);
          return level;
        });
        await profileSse(td, "events", name, async () => {
          await thing.invokeAction("fade", { level: 77, duration: 0 });
          return 77;
        });
        console.log(`${t}: EventSource got the named SSE event ${name}`);
      } else if (t === "Thermostat" && name === "overheating") {
        // the temperature drifts toward the target: above 25 °C, `overheating` fires once
        await thing.writeProperty("target", 35);
        seen = await within(20000, c.wait((v) => typeof v === "number" && v > 25), `${t}.${name}`);
      } else {
        fail(`${t} has event ${name} that this script does not know how to cause`);
      }
      console.log(`${t}: subscribed to ${name} and received ${seen}`);
    }
  }

  // Unsubscribing through node-wot aborts its polls: with nothing left open, node exits by
  // itself. A poll that goes on (an unsubscribe that missed its subscription) keeps it running.
  for (const sub of subscriptions) await within(5000, sub.stop(), "unsubscribe");
  await servient.shutdown();
  console.log(`node-wot interop passed (${subscriptions.length} subscriptions, all stopped)`);
  setTimeout(() => fail("node-wot still runs after every subscription stopped: a poll is still open"), 5000).unref();
}

within(180000, main(), "the whole run").catch((e) => fail(e.stack ?? e.message));
