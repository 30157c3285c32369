// The explorer's entry point: reads a list of TDs (this server's `things` by default, or any TD
// or TD list URL the user pastes), following `Link: rel="next"` pages, and shows one panel per
// thing. Over HTTP/1.1 a browser keeps at most six connections per server and each open panel
// holds two streams, so at most MAX_OPEN panels are open at once: opening another closes the
// one opened first.

import {el, showProblem} from './dom.js';
import {setSource} from './forms.js';
import {json, request} from './net.js';
import {thingPanel} from './thing.js';

const MAX_OPEN = 2;
const ACCEPT = 'application/json, application/td+json, application/ld+json';

const sourceForm = document.getElementById('source');
const sourceInput = document.getElementById('source-url');
const list = document.getElementById('things');
const state = document.getElementById('list-state');
const problem = document.getElementById('source-problem');

let panels = [];
let opened = [];

function nextLink(res) {
  const link = res.headers.get('link') || '';
  const m = link.split(',').map((s) => s.trim()).find((s) => /;\s*rel="?next"?/.test(s));
  return m ? new URL(m.slice(m.indexOf('<') + 1, m.indexOf('>')), res.url).href : null;
}

function looksLikeTd(v) {
  return v && typeof v === 'object' && !Array.isArray(v)
    && ('properties' in v || 'actions' in v || 'events' in v || 'forms' in v || 'title' in v);
}

/** Every TD reachable from `url`: a list (array, or a collection's `members`), pages followed. */
async function loadTds(url) {
  const tds = [];
  const seen = new Set();
  while (url && !seen.has(url)) {
    seen.add(url);
    const res = await request(url, {headers: {Accept: ACCEPT}});
    const body = await json(res);
    const page = Array.isArray(body) ? body : Array.isArray(body?.members) ? body.members : looksLikeTd(body) ? [body] : null;
    if (!page) throw new Error('this URL serves neither a TD nor a list of TDs');
    page.forEach((td) => setSource(td, res.url));
    tds.push(...page);
    url = nextLink(res) || (body && !Array.isArray(body) && body.next ? new URL(body.next, res.url).href : null);
  }
  return tds;
}

function onOpen(details) {
  opened = opened.filter((d) => d !== details && d.open);
  opened.push(details);
  while (opened.length > MAX_OPEN) opened.shift().open = false;
}

async function explore(url) {
  panels.forEach((p) => p.close());
  panels = [];
  opened = [];
  list.replaceChildren();
  showProblem(problem, null);
  state.textContent = 'loading…';
  try {
    const tds = await loadTds(url);
    panels = tds.map((td) => thingPanel(td, onOpen));
    list.replaceChildren(...panels.map((p) => el('li', {}, p.node)));
    state.textContent = `${tds.length} thing${tds.length === 1 ? '' : 's'} at ${url}`;
    if (panels.length === 1) panels[0].node.open = true;
  } catch (e) {
    state.textContent = '';
    showProblem(problem, e);
  }
}

const params = new URLSearchParams(location.search);
sourceInput.value = params.get('td') || new URL('things', location.href).href;
sourceForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const url = new URL(sourceInput.value, location.href).href;
  const here = new URL(location.href);
  here.searchParams.set('td', url);
  history.replaceState(null, '', here);
  explore(url);
});
explore(new URL(sourceInput.value, location.href).href);
