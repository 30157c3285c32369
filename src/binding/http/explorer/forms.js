// Picking a TD's forms by operation and subprotocol (never by position or by path), resolving
// their hrefs against the TD's base, and writing the curl / coap-client command for each.

const DEFAULT_METHOD = {
  readproperty: 'GET', writeproperty: 'PUT', observeproperty: 'GET', invokeaction: 'POST',
  queryaction: 'GET', cancelaction: 'DELETE', subscribeevent: 'GET', readallproperties: 'GET',
  writemultipleproperties: 'PUT', observeallproperties: 'GET', subscribeallevents: 'GET',
  queryallactions: 'GET',
};

// Operations a TD assumes for an affordance's forms that state no `op` (TD 1.1 §5.3.4.2).
function defaultOps(kind, affordance) {
  if (kind === 'property') {
    return affordance.readOnly ? ['readproperty'] : affordance.writeOnly ? ['writeproperty'] : ['readproperty', 'writeproperty'];
  }
  if (kind === 'action') return ['invokeaction'];
  if (kind === 'event') return ['subscribeevent'];
  return [];
}

function opsOf(form, kind, affordance) {
  if (form.op === undefined) return defaultOps(kind, affordance);
  return Array.isArray(form.op) ? form.op : [form.op];
}

// Where each TD was fetched from, for relative hrefs in a TD without `base`.
const fetchedFrom = new WeakMap();

export function setSource(td, url) {
  fetchedFrom.set(td, url);
}

function baseOf(td) {
  return new URL(td.base || '', fetchedFrom.get(td) || location.href).href;
}

/** The absolute href of a form, resolved against the TD's base (or the URL the TD came from). */
export function resolve(td, form) {
  return new URL(form.href, baseOf(td)).href;
}

/**
 * Forms of `affordance` (or of the thing, when kind is 'thing') for `op`. `wants(form)` narrows
 * them further (subprotocol, scheme). Only http(s) forms unless `schemes` says otherwise.
 */
export function formsFor(td, kind, affordance, op, schemes = ['http:', 'https:']) {
  const forms = (kind === 'thing' ? td.forms : affordance.forms) || [];
  return forms.filter((f) => opsOf(f, kind, affordance).includes(op)
    && schemes.includes(new URL(f.href, baseOf(td)).protocol));
}

/** The first HTTP form for `op` that is not a stream (no subprotocol). */
export function plain(td, kind, affordance, op) {
  return formsFor(td, kind, affordance, op).find((f) => !f.subprotocol);
}

/** The SSE form for `op`, if there is one. */
export function sse(td, kind, affordance, op) {
  return formsFor(td, kind, affordance, op).find((f) => f.subprotocol === 'sse');
}

export function methodOf(form, op) {
  return form['htv:methodName'] || DEFAULT_METHOD[op] || 'GET';
}

function quote(s) {
  return `'${String(s).replace(/'/g, `'\\''`)}'`;
}

function secured(td) {
  const names = [].concat(td.security || []);
  return names.some((n) => ((td.securityDefinitions || {})[n] || {}).scheme !== 'nosec');
}

/** Ready-to-paste commands for one affordance: one line per (op, form). */
export function commands(td, kind, name, affordance, example) {
  const lines = [];
  const auth = secured(td) ? ' -H "Authorization: Bearer $WOT_TOKEN"' : '';
  for (const form of affordance.forms || []) {
    let url;
    try { url = new URL(resolve(td, form)); } catch (_) { continue; }
    for (const op of opsOf(form, kind, affordance)) {
      if (op.startsWith('un')) continue;
      if (url.protocol === 'http:' || url.protocol === 'https:') {
        if (form.subprotocol && form.subprotocol !== 'sse') continue;
        const method = methodOf(form, op);
        let line = `curl -sS${auth}`;
        if (form.subprotocol === 'sse') line += ' -N -H "Accept: text/event-stream"';
        if (method !== 'GET') line += ` -X ${method}`;
        if (op === 'writeproperty' || op === 'writemultipleproperties' || (op === 'invokeaction' && example !== undefined)) {
          line += ` -H "Content-Type: application/json" -d ${quote(JSON.stringify(example ?? null))}`;
        }
        lines.push({op, text: `${line} ${quote(url.href)}`});
      } else if (url.protocol === 'coap:' || url.protocol === 'coaps:') {
        const method = (form['cov:method'] || DEFAULT_METHOD[op] || 'GET').toLowerCase();
        let line = `coap-client -m ${method}`;
        if (op.startsWith('observe') || op.startsWith('subscribe')) line += ' -s 60';
        if (op === 'writeproperty' || op === 'writemultipleproperties' || (op === 'invokeaction' && example !== undefined)) {
          // Content-Format 50 is application/json (RFC 7252 §12.3).
          line += ` -t 50 -e ${quote(JSON.stringify(example ?? null))}`;
        }
        lines.push({op, text: `${line} ${quote(url.href)}`});
      }
    }
  }
  return lines;
}
