// One thing's panel: its properties (live values, controls), actions (input forms, output,
// ActionStatus followed to its end, cancel), a bounded events log and its TD with ready-made
// commands. Everything it sends goes to an href taken from the TD's forms; it writes or invokes
// only when the user asks, and reads and observes only while the panel is open.
//
// The schema's bounds are hints on the controls (:invalid marks them); the forms do not block
// sending on them (novalidate), so that the server's problem (detail, pointer, rule) is what the
// user sees, as any other client would get it.

import {el, show, showProblem} from './dom.js';
import {control, inputForm, exampleOf} from './schema.js';
import {commands, methodOf, plain, resolve, sse} from './forms.js';
import {ProblemError, json, request, stream, streamsCarryCredentials} from './net.js';

const EVENT_LOG_SIZE = 50;
const POLL_MS = 2000;
const ACTION_POLL_MS = 200;
const DONE = new Set(['completed', 'failed', 'cancelled']);
const JSON_TYPES = 'application/json, application/td+json, application/ld+json';

let panels = 0;

/** Builds the panel of `td`; `onOpen(panel)` is told when it opens. Returns {node, close}. */
export function thingPanel(td, onOpen) {
  const n = panels++;
  const prefix = `t${n}`;
  const title = td.title || td.id || '(untitled)';
  const types = [].concat(td['@type'] || []);
  const details = el('details', {class: 'thing'});
  details.append(el('summary', {},
    el('span', {class: 'title', text: title}),
    types.length ? el('span', {class: 'types', text: types.join(', ')}) : null,
    el('span', {class: 'id', text: td.id || ''})));
  if (td.description) details.append(el('p', {class: 'description', text: td.description}));
  const streamState = el('p', {class: 'streams', role: 'status'});
  details.append(streamState);

  const properties = Object.entries(td.properties || {});
  const actions = Object.entries(td.actions || {});
  const events = Object.entries(td.events || {});
  const rows = new Map(); // property name → its row's set()

  if (properties.length) {
    const list = el('div', {class: 'affordances'});
    properties.forEach(([name, p], i) => {
      const row = propertyRow(td, name, p, `${prefix}-p${i}`);
      rows.set(name, row);
      list.append(row.node);
    });
    details.append(el('h3', {text: 'Properties'}), list);
  }
  if (actions.length) {
    const list = el('div', {class: 'affordances'});
    actions.forEach(([name, a], i) => list.append(actionRow(td, name, a, `${prefix}-a${i}`)));
    details.append(el('h3', {text: 'Actions'}), list);
  }
  const log = el('ol', {class: 'events', 'aria-live': 'polite', reversed: ''});
  if (events.length) details.append(el('h3', {text: 'Events'}), log);
  details.append(tdView(td, prefix));

  // Live only while open: streams and polls start on open and stop on close.
  let stops = [];
  const states = {};
  const setState = (what) => (text, ok) => {
    states[what] = {text, ok};
    streamState.replaceChildren(...Object.entries(states).map(([k, s]) =>
      el('span', {class: s.ok ? 'ok' : 'lost', text: `${k}: ${s.text}`})));
  };
  const start = () => {
    stops = [];
    const observed = new Set();
    const streams = streamsCarryCredentials(resolve(td, {href: ''}));
    const allForm = streams && sse(td, 'thing', null, 'observeallproperties');
    if (allForm) {
      const names = properties.filter(([, p]) => p.observable && !p.writeOnly).map(([name]) => name);
      names.forEach((name) => observed.add(name));
      if (names.length) {
        stops.push(stream(resolve(td, allForm), names, (name, v) => rows.get(name)?.set(v), setState('properties'),
          () => readEverything()));
      }
    } else {
      for (const [name, p] of properties) {
        const f = streams && sse(td, 'property', p, 'observeproperty');
        if (f && !p.writeOnly) {
          observed.add(name);
          stops.push(stream(resolve(td, f), [name], (_, v) => rows.get(name)?.set(v), setState(name),
            () => rows.get(name).read()));
        }
      }
    }
    // A first value for every readable property (and again after a stream was lost), then
    // polling for those nothing observes.
    const readAll = plain(td, 'thing', null, 'readallproperties');
    const readOne = (name) => rows.get(name).read();
    const readEverything = () => {
      if (readAll) {
        request(resolve(td, readAll), {headers: {Accept: JSON_TYPES}}).then(json).then((values) => {
          for (const [name, v] of Object.entries(values || {})) rows.get(name)?.set(v);
        }).catch(() => properties.forEach(([name]) => readOne(name)));
      } else {
        properties.forEach(([name]) => readOne(name));
      }
    };
    readEverything();
    const unobserved = properties.filter(([name, p]) => !observed.has(name) && !p.writeOnly).map(([name]) => name);
    if (unobserved.length) {
      const timer = setInterval(() => unobserved.forEach(readOne), POLL_MS);
      stops.push(() => clearInterval(timer));
    }
    const eventNames = events.map(([name]) => name);
    const onEvent = (name, data) => {
      log.prepend(el('li', {}, el('time', {text: new Date().toLocaleTimeString()}), ' ',
        el('strong', {text: (td.events[name] || {}).title || name}), ' ', el('code', {text: show(data)})));
      while (log.children.length > EVENT_LOG_SIZE) log.lastChild.remove();
    };
    const allEvents = streams && sse(td, 'thing', null, 'subscribeallevents');
    if (allEvents && eventNames.length) {
      stops.push(stream(resolve(td, allEvents), eventNames, onEvent, setState('events')));
    } else {
      for (const [name, e] of events) {
        const f = streams && sse(td, 'event', e, 'subscribeevent');
        if (f) stops.push(stream(resolve(td, f), [name], onEvent, setState(name)));
      }
    }
  };
  const stop = () => {
    stops.forEach((s) => s());
    stops = [];
    for (const k of Object.keys(states)) delete states[k];
    streamState.replaceChildren();
  };
  details.addEventListener('toggle', () => {
    if (details.open) {
      start();
      onOpen(details);
    } else {
      stop();
    }
  });
  return {node: details, close: stop};
}

function propertyRow(td, name, p, id) {
  const label = p.title || name;
  const readOnly = p.readOnly === true;
  const writeOnly = p.writeOnly === true;
  const c = control(p, id, label, {readOnly});
  const readForm = plain(td, 'property', p, 'readproperty');
  const writeForm = plain(td, 'property', p, 'writeproperty');
  const problem = el('output', {class: 'problem', role: 'alert', for: id, hidden: ''});
  const form = el('form', {class: 'affordance property', 'data-name': name, novalidate: ''});
  const badges = el('span', {class: 'badges'},
    readOnly ? el('span', {class: 'badge', text: 'read-only'}) : null,
    writeOnly ? el('span', {class: 'badge', text: 'write-only'}) : null,
    p.observable ? el('span', {class: 'badge', text: 'observable'}) : null);
  form.append(c.node);
  const write = async () => {
    let value;
    try {
      value = c.get();
    } catch (e) {
      showProblem(problem, e);
      return;
    }
    try {
      await request(resolve(td, writeForm), {
        method: methodOf(writeForm, 'writeproperty'),
        headers: {'Content-Type': 'application/json'},
        body: JSON.stringify(value),
      });
      showProblem(problem, null);
      if (!p.observable) read();
    } catch (e) {
      showProblem(problem, e);
      read(true); // the control shows what the thing holds, not what was refused
    }
  };
  const read = async (force) => {
    if (!readForm) return;
    try {
      const res = await request(resolve(td, readForm), {headers: {Accept: JSON_TYPES}});
      set(await json(res), force === true);
    } catch (e) {
      if (e instanceof ProblemError) showProblem(problem, e);
    }
  };
  if (writeForm && !readOnly) {
    if (p.type === 'boolean' && !Array.isArray(p.enum)) {
      c.input.addEventListener('change', write);
    } else {
      c.node.append(el('button', {type: 'submit', text: 'Set', 'aria-label': `Set ${label}`}));
      c.input.addEventListener('commit', write);
    }
  } else {
    c.input.disabled = true;
  }
  c.node.append(badges);
  if (p.description) form.append(el('p', {class: 'description', text: p.description}));
  form.addEventListener('submit', (e) => { e.preventDefault(); write(); });
  form.append(problem);
  const set = (v, force) => {
    c.set(v, force);
    c.input.dataset.value = JSON.stringify(v);
    firstValue();
  };
  return {node: form, set, read};
}

function actionRow(td, name, a, id) {
  const label = a.title || name;
  const invokeForm = plain(td, 'action', a, 'invokeaction');
  const input = inputForm(a.input, id);
  const form = el('form', {class: 'affordance action', 'data-name': name, novalidate: ''});
  const invoke = el('button', {type: 'submit', text: label, id: `${id}-invoke`});
  const cancel = el('button', {type: 'button', text: 'Cancel', hidden: ''});
  const status = el('output', {class: 'action-status', for: `${id}-invoke`, 'aria-live': 'polite'});
  const problem = el('output', {class: 'problem', role: 'alert', hidden: ''});
  form.append(el('h4', {text: label}));
  if (a.description) form.append(el('p', {class: 'description', text: a.description}));
  if (input.node) form.append(input.node);
  form.append(el('div', {class: 'buttons'}, invoke, cancel), status, problem);
  if (!invokeForm) invoke.disabled = true;
  let following = null;
  const showStatus = (s, output) => {
    status.replaceChildren(el('span', {class: `state ${s}`, text: s}),
      output === undefined ? '' : ' ', output === undefined ? '' : el('code', {class: 'output', text: show(output)}));
    status.dataset.state = s;
  };
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    let body;
    try {
      body = a.input ? JSON.stringify(input.get()) : undefined;
    } catch (err) {
      showProblem(problem, err);
      return;
    }
    showProblem(problem, null);
    try {
      const res = await request(resolve(td, invokeForm), {
        method: methodOf(invokeForm, 'invokeaction'),
        headers: body === undefined ? {} : {'Content-Type': 'application/json'},
        body,
      });
      const value = await json(res);
      const location = res.headers.get('location') || (value && value.href);
      if (res.status === 201 || (value && typeof value === 'object' && 'status' in value && location)) {
        follow(new URL(location, res.url).href, value);
      } else {
        showStatus('completed', value);
      }
    } catch (err) {
      showProblem(problem, err);
    }
  });
  // An asynchronous action: its ActionStatus is read from where the server said it lives until
  // it ends; Cancel deletes it there.
  const follow = (href, first) => {
    if (following) following.stop = true;
    const me = {stop: false};
    following = me;
    cancel.hidden = false;
    cancel.onclick = async () => {
      try {
        await request(href, {method: 'DELETE'});
      } catch (err) {
        showProblem(problem, err);
      }
    };
    const tick = async (s) => {
      if (me.stop) return;
      showStatus(s.status, s.output ?? s.error?.detail ?? s.error);
      if (DONE.has(s.status)) {
        cancel.hidden = true;
        return;
      }
      setTimeout(async () => {
        try {
          tick(await json(await request(href, {headers: {Accept: 'application/json'}})));
        } catch (err) {
          showProblem(problem, err);
          cancel.hidden = true;
        }
      }, ACTION_POLL_MS);
    };
    tick(first || {status: 'pending'});
  };
  return form;
}

function tdView(td, prefix) {
  const text = JSON.stringify(td, null, 2);
  const view = el('details', {class: 'td'});
  const copy = el('button', {type: 'button', text: 'Copy TD'});
  const done = el('span', {role: 'status'});
  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(text);
      done.textContent = 'copied';
    } catch (_) {
      done.textContent = 'copy refused by the browser; select the text below';
    }
  });
  const download = el('a', {class: 'button', download: `${(td.title || 'thing').replace(/[^\w.-]+/g, '_')}.td.json`, text: 'Download TD'});
  download.href = URL.createObjectURL(new Blob([text], {type: 'application/td+json'}));
  const cmds = el('div', {class: 'commands'});
  const writable = Object.fromEntries(Object.entries(td.properties || {})
    .filter(([, p]) => !p.readOnly).map(([name, p]) => [name, exampleOf(p)]));
  const whole = commands(td, 'thing', '', {forms: td.forms || []}, writable);
  if (whole.length) {
    cmds.append(el('h4', {text: 'The whole thing'}),
      el('pre', {}, el('code', {text: whole.map((l) => `# ${l.op}\n${l.text}`).join('\n')})));
  }
  for (const [kind, key] of [['property', 'properties'], ['action', 'actions'], ['event', 'events']]) {
    for (const [name, a] of Object.entries(td[key] || {})) {
      const example = kind === 'property' ? exampleOf(a) : kind === 'action' && a.input ? exampleOf(a.input) : undefined;
      const lines = commands(td, kind, name, a, example);
      if (!lines.length) continue;
      cmds.append(el('h4', {text: `${a.title || name} (${kind})`}),
        el('pre', {}, el('code', {text: lines.map((l) => `# ${l.op}\n${l.text}`).join('\n')})));
    }
  }
  view.append(el('summary', {text: 'Thing Description and commands'}),
    el('div', {class: 'buttons'}, copy, download, done),
    el('pre', {class: 'td-json', id: `${prefix}-td`}, el('code', {text})),
    el('h4', {text: 'Commands from its forms'}), cmds);
  return view;
}

// Time from navigation to the first value on screen, for the README's measurement.
function firstValue() {
  if (document.body.dataset.firstValueMs === undefined) {
    document.body.dataset.firstValueMs = String(Math.round(performance.now()));
  }
}
