// Talking to a WoT server from the page: fetch with the credentials the user gave (asked for
// once per server, on its first 401, kept in sessionStorage), problem+json read into an Error,
// and EventSource streams that reconnect with backoff and say so. Nothing here knows a URL path:
// callers pass hrefs taken from TD forms.
//
// Credentials are kept per origin and sent only to the origin they were given for: a TD pasted
// in from elsewhere, or a form pointing at another host, never receives this device's token.

const TOKEN_KEY = 'wot-explorer-token';
const asking = new Map(); // origin → the pending prompt, shared by every request refused meanwhile

/** A refused request: status and the problem+json members the page shows next to a control. */
export class ProblemError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

function keyOf(url) {
  return `${TOKEN_KEY}:${new URL(url).origin}`;
}

function token(url) {
  return sessionStorage.getItem(keyOf(url));
}

function basic(url) {
  return sessionStorage.getItem(keyOf(url) + ':scheme') === 'basic';
}

function authorization(url) {
  const t = token(url);
  if (!t) return null;
  // Basic takes "user:password", encoded as UTF-8; anything else is a bearer token.
  if (basic(url)) return 'Basic ' + btoa(String.fromCharCode(...new TextEncoder().encode(t)));
  return 'Bearer ' + t;
}

/**
 * Asks for credentials for `url`'s origin; resolves to whether the user gave any. Requests
 * refused meanwhile share the question; questions for other origins wait their turn.
 */
function askForToken(url, challenge, wrong) {
  const origin = new URL(url).origin;
  if (!asking.has(origin)) {
    const pending = queue.then(() => prompt(url, challenge, wrong));
    queue = pending;
    asking.set(origin, pending.finally(() => asking.delete(origin)));
  }
  return asking.get(origin);
}

let queue = Promise.resolve(true); // the dialog shows one question at a time

function prompt(url, challenge, wrong) {
  const origin = new URL(url).origin;
  const dialog = document.getElementById('auth');
  const form = dialog.querySelector('form');
  const input = dialog.querySelector('input');
  const isBasic = /^basic/i.test(challenge || '');
  dialog.querySelector('#auth-hint').textContent = (wrong ? 'Those credentials were refused. ' : '')
    + `${origin} wants ` + (isBasic ? 'HTTP Basic credentials: user:password.' : 'a bearer token.');
  dialog.querySelector('label').textContent = isBasic ? 'user:password' : 'Token';
  input.value = '';
  return new Promise((resolve) => {
    const submit = (e) => {
      e.preventDefault();
      sessionStorage.setItem(keyOf(url), input.value);
      sessionStorage.setItem(keyOf(url) + ':scheme', isBasic ? 'basic' : 'bearer');
      done(true);
    };
    // Escape (or closing the dialog otherwise) gives up: the request fails with its 401.
    const cancelled = () => done(false);
    const done = (given) => {
      form.removeEventListener('submit', submit);
      dialog.removeEventListener('close', cancelled);
      if (dialog.open) dialog.close();
      resolve(given);
    };
    form.addEventListener('submit', submit);
    dialog.addEventListener('close', cancelled);
    dialog.showModal();
    input.focus();
  });
}

async function problemOf(res) {
  const type = res.headers.get('content-type') || '';
  if (type.includes('json')) {
    try { return await res.json(); } catch (_) { /* fall through */ }
  }
  return {title: res.statusText, detail: `${res.status} ${res.statusText}`};
}

/**
 * fetch with credentials; on a 401 asks for them (once for all requests) and tries again.
 * Resolves to the Response of a 2xx, rejects with a ProblemError otherwise.
 */
export async function request(url, init = {}) {
  for (let attempt = 0; ; attempt++) {
    const headers = new Headers(init.headers || {});
    const auth = authorization(url);
    if (auth) headers.set('Authorization', auth);
    const res = await fetch(url, {...init, headers});
    if (res.status === 401 && attempt < 5
        && await askForToken(url, res.headers.get('www-authenticate'), !!auth)) {
      continue;
    }
    if (!res.ok) throw new ProblemError(res.status, await problemOf(res));
    return res;
  }
}

/** The JSON of a response, or undefined when it has no body. */
export async function json(res) {
  const text = await res.text();
  return text ? JSON.parse(text) : undefined;
}

/**
 * Whether EventSource can carry the credentials given: a bearer token goes in the query, Basic
 * credentials cannot (the page polls instead).
 */
export function streamsCarryCredentials(url) {
  return !token(url) || !basic(url);
}

/** A URL for EventSource/WebSocket, which cannot send headers: the token goes in the query. */
export function withToken(url) {
  const t = token(url);
  if (!t || basic(url)) return url;
  const u = new URL(url);
  u.searchParams.set('access_token', t);
  return u.href;
}

/**
 * An SSE stream that reconnects with exponential backoff (1 s .. 30 s) after it is lost, and
 * reports its state to `status(text, ok)`. `onEvent(name, data)` gets each named event;
 * `reopened()` is called when it is back after a loss (what changed meanwhile was not seen).
 * Returns a function that closes it for good.
 */
export function stream(url, names, onEvent, status, reopened = () => {}) {
  let source = null;
  let delay = 1000;
  let timer = null;
  let closed = false;
  let lost = false;
  const open = () => {
    if (closed) return;
    source = new EventSource(withToken(url));
    source.onopen = () => {
      delay = 1000;
      status('live', true);
      if (lost) reopened();
      lost = false;
    };
    const deliver = (e) => {
      let data;
      try { data = JSON.parse(e.data); } catch (_) { data = e.data; }
      onEvent(e.type, data);
    };
    for (const name of names) source.addEventListener(name, deliver);
    source.onerror = () => {
      source.close();
      if (closed) return;
      lost = true;
      status(`connection lost; reconnecting in ${Math.round(delay / 1000)} s`, false);
      timer = setTimeout(open, delay);
      delay = Math.min(delay * 2, 30000);
    };
  };
  open();
  return () => { closed = true; clearTimeout(timer); if (source) source.close(); };
}
