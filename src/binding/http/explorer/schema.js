// Controls generated from a DataSchema: boolean switch, number/integer slider with field,
// enum select, string field with pattern and lengths, JSON editor for objects and arrays (and
// anything untyped). Only JSON syntax is checked here; the server is the authority on the
// schema, and its problem (detail, pointer, rule) is shown next to the control.

import {el} from './dom.js';

/**
 * A control for `schema` labelled `label`. Returns {node, input, get, set}: `get()` returns the
 * value to send (throws an Error with a message for text that is not JSON or not a number),
 * `set(v, force)` shows a value (unless forced, not while the user is editing that control).
 */
export function control(schema, id, label, opts = {}) {
  const s = schema || {};
  const labelNode = el('label', {for: id, text: label});
  const unit = s.unit ? el('span', {class: 'unit', text: s.unit}) : null;
  const editing = (input) => document.activeElement === input && !opts.readOnly;
  let node;
  let input;
  let get;
  let set;
  if (Array.isArray(s.enum)) {
    input = el('select', {id});
    s.enum.forEach((v, i) => input.append(el('option', {value: String(i), text: typeof v === 'string' ? v : JSON.stringify(v)})));
    get = () => s.enum[Number(input.value)];
    set = (v, force) => {
      const i = s.enum.findIndex((e) => JSON.stringify(e) === JSON.stringify(v));
      if (i >= 0 && (force || !editing(input))) input.value = String(i);
    };
    node = el('div', {class: 'field'}, labelNode, input, unit);
  } else if (s.type === 'boolean') {
    input = el('input', {id, type: 'checkbox', role: 'switch'});
    get = () => input.checked;
    set = (v) => { input.checked = v === true; };
    node = el('div', {class: 'field switch'}, labelNode, input);
  } else if (s.type === 'number' || s.type === 'integer') {
    input = el('input', {id, type: 'number', inputmode: s.type === 'integer' ? 'numeric' : 'decimal'});
    const step = s.multipleOf ?? (s.type === 'integer' ? 1 : 'any');
    input.step = String(step);
    if (s.minimum !== undefined) input.min = String(s.minimum);
    if (s.maximum !== undefined) input.max = String(s.maximum);
    let slider = null;
    if (s.minimum !== undefined && s.maximum !== undefined && !opts.readOnly) {
      slider = el('input', {type: 'range', min: String(s.minimum), max: String(s.maximum), step: String(step),
        'aria-label': `${label} slider`, tabindex: '-1'});
      slider.addEventListener('input', () => { input.value = slider.value; });
      slider.addEventListener('change', () => input.dispatchEvent(new Event('commit')));
      input.addEventListener('input', () => { slider.value = input.value; });
    }
    get = () => {
      if (input.value.trim() === '') {
        if (opts.optional) return undefined;
        throw new Error('enter a number');
      }
      const n = Number(input.value);
      if (!Number.isFinite(n)) throw new Error('not a number');
      return n;
    };
    set = (v, force) => {
      if (!force && (editing(input) || (slider && document.activeElement === slider))) return;
      input.value = v === null || v === undefined ? '' : String(v);
      if (slider) slider.value = input.value;
    };
    node = el('div', {class: 'field'}, labelNode, slider, input, unit);
  } else if (s.type === 'string') {
    input = el('input', {id, type: 'text'});
    if (s.pattern) input.pattern = s.pattern;
    if (s.minLength !== undefined) input.minLength = s.minLength;
    if (s.maxLength !== undefined) input.maxLength = s.maxLength;
    get = () => (opts.optional && input.value === '' ? undefined : input.value);
    set = (v, force) => { if (force || !editing(input)) input.value = v ?? ''; };
    node = el('div', {class: 'field'}, labelNode, input, unit);
  } else {
    input = el('textarea', {id, rows: '3', spellcheck: 'false', class: 'json'});
    get = () => {
      if (input.value.trim() === '') {
        if (opts.optional) return undefined;
        throw new Error('enter a JSON value');
      }
      try { return JSON.parse(input.value); } catch (e) { throw new Error(`not JSON: ${e.message}`); }
    };
    set = (v, force) => { if (force || !editing(input)) input.value = JSON.stringify(v, null, 1); };
    node = el('div', {class: 'field'}, labelNode, input, unit);
  }
  if (opts.readOnly) {
    input.disabled = true;
  }
  if (s.default !== undefined && opts.showDefault) set(s.default);
  return {node, input, get, set};
}

/**
 * An action's input form: one control per member of an object schema with `properties`, else one
 * control for the whole input. `get()` assembles the value.
 */
export function inputForm(schema, idPrefix) {
  if (!schema) return {node: null, get: () => undefined, example: undefined};
  if (schema.type === 'object' && schema.properties) {
    const required = new Set(schema.required || []);
    const fields = Object.entries(schema.properties).map(([name, sub]) => ({
      name,
      c: control(sub, `${idPrefix}-${name}`, (sub.title || name) + (required.has(name) ? '' : ' (optional)'),
        {optional: !required.has(name), showDefault: true}),
    }));
    const get = () => {
      const out = {};
      for (const {name, c} of fields) {
        const v = c.get();
        if (v !== undefined) out[name] = v;
      }
      return out;
    };
    const example = Object.fromEntries(Object.entries(schema.properties)
      .map(([n, sub]) => [n, exampleOf(sub)]));
    return {node: el('div', {class: 'inputs'}, ...fields.map((f) => f.c.node)), get, example};
  }
  const c = control(schema, `${idPrefix}-input`, schema.title || 'Input', {showDefault: true});
  return {node: c.node, get: c.get, example: exampleOf(schema)};
}

/** A plausible value for a schema, for the ready-made commands. */
export function exampleOf(s = {}) {
  if (s.default !== undefined) return s.default;
  if (s.const !== undefined) return s.const;
  if (Array.isArray(s.enum)) return s.enum[0];
  switch (s.type) {
    case 'boolean': return true;
    case 'integer': case 'number': return s.minimum ?? s.maximum ?? 0;
    case 'string': return '';
    case 'array': return [];
    case 'object': return Object.fromEntries(Object.entries(s.properties || {}).map(([n, sub]) => [n, exampleOf(sub)]));
    default: return null;
  }
}
