// A thing produced and exposed by node-wot's own servient, for nodewot-server.sh: `wot`'s client
// verbs are run against it. Usage: node nodewot-server.mjs MODULES_DIR http|coap
// MODULES_DIR holds node_modules with @node-wot/core and the binding. Prints one JSON line
// {"td": URL} when the thing is exposed (over CoAP the URL node-wot lists in /.well-known/core),
// then serves until killed.
import { createRequire } from "node:module";
import net from "node:net";
import dgram from "node:dgram";

const [dir, binding] = process.argv.slice(2);
const require = createRequire(`${dir}/`);
const { Servient, Helpers } = require("@node-wot/core");
// node-wot writes one form per address of every interface into the TD; the servers below listen
// on loopback only, so loopback is the one address their forms may name.
Helpers.getAddresses = () => ["127.0.0.1"];

// A port the kernel has just handed out and released: node-wot's servers take a fixed port.
async function freePort(kind) {
  if (kind === "udp") {
    const s = dgram.createSocket("udp4");
    await new Promise((ok) => s.bind(0, "127.0.0.1", ok));
    const { port } = s.address();
    await new Promise((ok) => s.close(ok));
    return port;
  }
  const s = net.createServer();
  await new Promise((ok) => s.listen(0, "127.0.0.1", ok));
  const { port } = s.address();
  await new Promise((ok) => s.close(ok));
  return port;
}

const servient = new Servient();
let port;
if (binding === "http") {
  const { HttpServer } = require("@node-wot/binding-http");
  port = await freePort("tcp");
  servient.addServer(new HttpServer({ port, address: "127.0.0.1" }));
} else {
  const { CoapServer } = require("@node-wot/binding-coap");
  port = await freePort("udp");
  servient.addServer(new CoapServer({ port, address: "127.0.0.1" }));
}
const WoT = await servient.start();

let count = 3;
const label = "node-wot";
const thing = await WoT.produce({
  title: "counter",
  properties: {
    count: { type: "integer", observable: true },
    label: { type: "string", readOnly: true },
  },
  actions: {
    add: { input: { type: "integer" }, output: { type: "integer" } },
  },
  events: {
    changed: { data: { type: "integer" } },
  },
});
thing.setPropertyReadHandler("count", async () => count);
thing.setPropertyReadHandler("label", async () => label);
thing.setPropertyWriteHandler("count", async (value) => {
  count = await value.value();
  thing.emitPropertyChange("count");
  thing.emitEvent("changed", count);
});
thing.setActionHandler("add", async (params) => {
  count += await params.value();
  thing.emitPropertyChange("count");
  thing.emitEvent("changed", count);
  return count;
});
await thing.expose();

// The TD URL as node-wot lists it over CoAP: the `rt="wot.thing"` link of /.well-known/core.
// Over HTTP its list at `/` is always empty in 0.9.2 (thingsRoute iterates a Map with for…in),
// so the URL is the thing's path on the server.
async function listedOverCoap() {
  const coap = require("coap");
  const links = await new Promise((ok, ko) => {
    const req = coap.request({ hostname: "127.0.0.1", port, pathname: "/.well-known/core" });
    req.on("response", (res) => ok(res.payload.toString()));
    req.on("error", ko);
    req.end();
  });
  const path = links
    .split(",")
    .find((link) => link.includes('rt="wot.thing"'))
    ?.match(/^<([^>]*)>/)?.[1];
  if (!path) throw new Error(`no wot.thing link in /.well-known/core: ${links}`);
  return `coap://127.0.0.1:${port}${path}`;
}

const td = binding === "http" ? `http://127.0.0.1:${port}/counter` : await listedOverCoap();
console.log(JSON.stringify({ td }));
