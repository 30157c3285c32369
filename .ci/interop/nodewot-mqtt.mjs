// node-wot's MQTT client (@node-wot/binding-mqtt 0.8.16, the newest on npm, with its core) as a
// consumer of `wot serve --mqtt`: the lamp's TD fetched over HTTP and consumed with only the MQTT
// client registered, so every operation goes through the broker with the TD's MQTT forms.
//
//   node nodewot-mqtt.mjs <http origin> <dir with node_modules>
//
// readProperty (the retained value), writeProperty (then read back over HTTP), observeProperty
// (a change made over HTTP arrives), invokeAction (node-wot publishes without waiting for a
// reply; the effect is read over HTTP), subscribeEvent (the event the invocation causes).
import { createRequire } from "node:module";
import path from "node:path";

const [origin, modules] = process.argv.slice(2);
const require = createRequire(path.join(path.resolve(modules), "package.json"));
const { Servient } = require("@node-wot/core");
const { MqttClientFactory } = require("@node-wot/binding-mqtt");

const fail = (m) => {
  console.error(`nodewot-mqtt interop FAILED: ${m}`);
  process.exit(1);
};
process.on("unhandledRejection", (e) => fail(`unhandled rejection: ${e?.stack ?? e}`));
const within = (ms, p, what) =>
  Promise.race([p, new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), ms))]);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const http = async (p, init) => {
  const r = await fetch(`${origin}${p}`, init);
  if (!r.ok) throw new Error(`${init?.method ?? "GET"} ${p}: ${r.status}`);
  return r.status === 204 ? undefined : r.json();
};
const put = (p, v) => http(p, { method: "PUT", body: JSON.stringify(v), headers: { "Content-Type": "application/json" } });

const servient = new Servient();
servient.addClientFactory(new MqttClientFactory());
const WoT = await servient.start();
const td = await http("/things/lamp");
const thing = await WoT.consume(td);

try {
  await put("/things/lamp/properties/brightness", 33);
  await sleep(300);
  const read = await within(10000, (await thing.readProperty("brightness")).value(), "readProperty");
  if (read !== 33) fail(`readProperty brightness: ${read}, not 33`);
  console.log(`read brightness ${read} (the retained value)`);

  await within(10000, thing.writeProperty("brightness", 44), "writeProperty");
  let seen;
  for (let i = 0; i < 50 && seen !== 44; i++) {
    await sleep(100);
    seen = await http("/things/lamp/properties/brightness");
  }
  if (seen !== 44) fail(`writeProperty: HTTP reads ${seen}, not 44`);
  console.log("wrote brightness 44 (read back over HTTP)");

  const changes = [];
  const sub = await within(10000, thing.observeProperty("brightness", async (out) => changes.push(await out.value())), "observeProperty");
  await sleep(500);
  await put("/things/lamp/properties/brightness", 55);
  for (let i = 0; i < 50 && !changes.includes(55); i++) await sleep(100);
  if (!changes.includes(55)) fail(`observeProperty saw ${JSON.stringify(changes)}, not 55`);
  console.log(`observed brightness 55 (changed over HTTP): ${JSON.stringify(changes)}`);
  await sub.stop();

  const events = [];
  const esub = await within(10000, thing.subscribeEvent("faded", async (out) => events.push(await out.value())), "subscribeEvent");
  await sleep(500);
  await within(10000, thing.invokeAction("fade", { level: 9, duration: 200 }), "invokeAction");
  for (let i = 0; i < 50 && !events.includes(9); i++) await sleep(100);
  if (!events.includes(9)) fail(`subscribeEvent faded saw ${JSON.stringify(events)}`);
  const after = await http("/things/lamp/properties/brightness");
  if (after !== 9) fail(`invokeAction fade: brightness ${after}, not 9`);
  console.log(`invoked fade to 9 and received faded ${JSON.stringify(events)}`);
  await esub.stop();
} finally {
  await servient.shutdown();
}
console.log("node-wot MQTT consumer passed");
process.exit(0);
