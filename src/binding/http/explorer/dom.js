// Building DOM nodes. Text always goes in as text (textContent), never as HTML: titles,
// descriptions and values come from thing files and servers the page does not control.

/** An element with attributes (`text` sets its text) and children (null ones skipped). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === 'text') node.textContent = v;
    else if (k === 'class') node.className = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c !== null && c !== undefined && c !== false) node.append(c);
  }
  return node;
}

/** Shows a failure next to a control: the problem's detail, and its pointer and rule if any. */
export function showProblem(output, error) {
  output.replaceChildren();
  if (!error) {
    output.hidden = true;
    return;
  }
  output.hidden = false;
  const p = error.problem || {};
  output.append(el('span', {class: 'detail', text: p.detail || error.message}));
  if (p.pointer !== undefined) output.append(' ', el('code', {class: 'pointer', text: `pointer ${p.pointer || '/'}`}));
  if (p.rule !== undefined) output.append(' ', el('code', {class: 'rule', text: `rule ${p.rule}`}));
  if (error.status) output.append(' ', el('span', {class: 'status', text: `(${error.status})`}));
}

/** A value as one line of text. */
export function show(value) {
  return value === undefined ? '' : typeof value === 'string' ? value : JSON.stringify(value);
}
