// node-wot 0.7.5 as the WebThings Gateway's wot-adapter runs it (src/wot-device.ts): it fetches
// the TD itself, consumes it, and calls subscribeEvent and observeProperty without formIndex, so
// node-wot takes the first form with the op. For every bundled thing: each event and each
// writable observable property receives the change this script causes.
//
//   node nodewot07.mjs <http origin> <directory holding node_modules with @node-wot/* 0.7.5>
import { createRequire } from "node:module";
import path from "node:path";

const [origin, modules] = process.argv.slice(2);
if (!origin || !modules) {
  console.error("usage: node nodewot07.mjs <http origin> <dir with node_modules>");
  process.exit(2);
}
const require = createRequire(path.join(path.resolve(modules), "package.json"));
const { Servient } = require("@node-wot/core");
const { HttpClientFactory } = require("@node-wot/binding-http");

const fail = (message) => {
  console.error(`nodewot 0.7.5 interop FAILED: ${message}`);
  process.exit(1);
};
process.on("unhandledRejection", (e) => fail(`unhandled rejection: ${e?.stack ?? e}`));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Causes a change with a fresh value every 500 ms until `received` holds one of them: a poll
// answers only the changes after it arrives, and this script cannot see it arrive.
async function causeUntilSeen(what, received, cause, tries = 16) {
  const caused = [];
  for (let i = 0; i < tries; i++) {
    caused.push(await cause(i));
    await sleep(500);
    const hit = received.find((v) => caused.includes(v));
    if (hit !== undefined) return hit;
  }
  throw new Error(`${what}: none of ${JSON.stringify(caused)} arrived; got ${JSON.stringify(received)}`);
}

async function main() {
  const servient = new Servient();
  servient.addClientFactory(new HttpClientFactory(null));
  const WoT = await servient.start();
  const tds = await (await fetch(`${origin}/things`)).json();
  let checked = 0;
  for (const td of tds) {
    const thing = await WoT.consume(td);
    const t = td.title;
    for (const [name, p] of Object.entries(td.properties ?? {})) {
      if (!p.observable || p.readOnly || !["integer", "number", "boolean"].includes(p.type)) continue;
      const received = [];
      thing.observeProperty(name, (value) => received.push(value));
      const seen = await causeUntilSeen(`${t}.${name}`, received, async (i) => {
        const v = p.type === "boolean" ? i % 2 === 0 : (p.minimum ?? 0) + 5 + i;
        await thing.writeProperty(name, v);
        return v;
      });
      console.log(`0.7.5 ${t}: observed ${name} (${seen})`);
      checked++;
    }
    for (const name of Object.keys(td.events ?? {})) {
      const received = [];
      thing.subscribeEvent(name, (data) => received.push(data));
      let seen;
      if (t === "Lamp" && name === "faded") {
        seen = await causeUntilSeen(`${t}.${name}`, received, async (i) => {
          await thing.invokeAction("fade", { level: 30 + i, duration: 0 });
          return 30 + i;
        });
      } else if (t === "Thermostat" && name === "overheating") {
        // Cool below 24.5 °C first (it fires again only then), then heat past 25 °C.
        await thing.writeProperty("target", 5);
        for (let i = 0; (await thing.readProperty("temperature")) >= 24.5; i++) {
          if (i > 120) throw new Error(`${t} does not cool below 24.5 °C`);
          await sleep(250);
        }
        await thing.writeProperty("target", 35);
        for (let i = 0; !received.some((v) => v > 25); i++) {
          if (i > 80) throw new Error(`${t}.${name}: nothing above 25 °C arrived`);
          await sleep(250);
        }
        seen = received.find((v) => v > 25);
      } else {
        throw new Error(`${t} has event ${name} that this script does not know how to cause`);
      }
      console.log(`0.7.5 ${t}: subscribed to ${name} (${seen})`);
      checked++;
    }
  }
  if (checked < 5) throw new Error(`only ${checked} subscriptions checked`);
  console.log(`node-wot 0.7.5 (wot-adapter's way) passed: ${checked} subscriptions`);
  // node-wot 0.7.5's polls cannot be aborted (its close() only stops the next one): exit here.
  process.exit(0);
}

const deadline = setTimeout(() => fail("timed out after 120 s"), 120000);
main()
  .then(() => clearTimeout(deadline))
  .catch((e) => fail(e.stack ?? e.message));
