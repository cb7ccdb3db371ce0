// The tool runner on a device's page: pick a tool, edit an input built from
// its schema, run it, and read the result as a table, a file or a proposal.

import { api, el, say } from './http.js';
import { showProposal } from './proposals.js';

/** Says how to continue a truncated result, naming the field the tool gave. */
export const continuation = (o) => {
  if (o.next_start_line != null) return `Truncated at the 1 MB bound: run again with start_line ${o.next_start_line} to continue, or use upload to move the whole file.`;
  if (o.next_offset != null) return `Truncated: run again with offset ${o.next_offset} to continue.`;
  return 'Truncated: a bound cut this result short.';
};

// An input that runs as it is: every required field filled with a value of
// its type (a nested object or array item built from its own schema).
const EXAMPLES = {
  path: '.', pattern: '*', content: 'hello\n', source: 'notes.txt', destination: 'notes-copy.txt',
  target: 'model.obj', from: 'old-name.txt', to: 'new-name.txt', old_text: 'draft', new_text: 'final',
};
const resolve = (root, s) => {
  while (s && s.$ref) s = (root.$defs || root.definitions || {})[s.$ref.split('/').pop()] || {};
  if (s && Array.isArray(s.anyOf)) s = s.anyOf.find((o) => o.type !== 'null') || s;
  return s || {};
};
const example = (root, name, s, depth) => {
  s = resolve(root, s);
  if (s.default !== undefined) return s.default;
  if (Array.isArray(s.examples) && s.examples.length) return s.examples[0];
  if (Array.isArray(s.enum) && s.enum.length) return s.enum[0];
  if (s.const !== undefined) return s.const;
  const t = Array.isArray(s.type) ? s.type.find((x) => x !== 'null') : s.type;
  if (t === 'object' || s.properties) return depth > 3 ? {} : skeleton(root, s, depth + 1);
  if (t === 'array') return depth > 3 ? [] : [example(root, name.replace(/s$/, ''), s.items || {}, depth + 1)];
  if (t === 'boolean') return false;
  if (t === 'integer' || t === 'number') return s.minimum || 0;
  if (name === 'sources' || name === 'source') return name === 'sources' ? 'scan.e57' : EXAMPLES.source;
  return EXAMPLES[name] !== undefined ? EXAMPLES[name] : '';
};
const skeleton = (root, schema, depth = 0) => {
  const out = {};
  const props = schema.properties || {};
  for (const name of schema.required || []) out[name] = example(root, name, props[name] || {}, depth);
  if (depth === 0 && props.path && out.path === undefined) out.path = '.';
  return out;
};

/** A description as text: `code` spans become code, nothing else is markup. */
const describe = (target, text) => {
  target.replaceChildren();
  text.split('`').forEach((part, i) => target.append(i % 2 ? el('code', {}, part) : document.createTextNode(part)));
};

const table = (rows, columns) => {
  const t = el('table');
  const head = el('tr');
  columns.forEach((c) => head.append(el('th', {}, c)));
  const thead = el('thead');
  thead.append(head);
  t.append(thead);
  const body = el('tbody');
  rows.forEach((r) => {
    const tr = el('tr');
    columns.forEach((c) => tr.append(el('td', {}, r[c] === undefined ? '' : String(r[c]))));
    body.append(tr);
  });
  t.append(body);
  return t;
};

// Sizes and times as people read them.
const size = (b) => {
  if (b == null || b === '') return '';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let v = Number(b), u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u += 1; }
  return u === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
};
const when = (t) => {
  if (!t) return '';
  const d = new Date(typeof t === 'number' ? t * 1000 : t);
  return Number.isNaN(d.getTime()) ? String(t) : d.toLocaleString();
};

/** Shows the proposal `id` in `where`, or why it cannot. */
const proposal = (where, id) =>
  showProposal(where, id).catch((e) => where.replaceChildren(el('p', { class: 'error' }, say(e))));

// An uploaded file offered as the source of a download: pick a device and a
// path; the download is planned there, to approve like any change.
const sendBlob = (o) => {
  const form = el('div', { class: 'send-blob' });
  const device = el('select', { id: 'blob-device' });
  const path = el('input', { id: 'blob-path', value: o.name });
  const send = el('button', { id: 'blob-send', type: 'button' }, 'Propose writing it there');
  const where = el('div');
  const label = (text, input) => { const l = el('label', {}, text); l.append(input); return l; };
  form.append(el('p', {}, 'Put it on a device:'), label('Device ', device), label('Path ', path), send, where);
  api('GET', '/api/devices').then((list) => {
    list.devices
      .filter((d) => !d.revoked_at && d.manifest && d.manifest.tools.includes('download'))
      .forEach((d) => device.append(el('option', { value: d.id }, `${d.name}${d.online ? '' : ' (offline)'}`)));
    if (!device.options.length) where.replaceChildren(el('p', { class: 'muted' }, 'No device offers download yet.'));
  }, (e) => where.replaceChildren(el('p', { class: 'error' }, say(e))));
  send.addEventListener('click', async () => {
    if (send.disabled || !device.value) return;
    send.disabled = true;
    try {
      const out = await api('POST', `/api/devices/${device.value}/calls`, { tool: 'download', input: { blob_id: o.blob_id, path: path.value } });
      await proposal(where, out.id);
    } catch (e) {
      where.replaceChildren(el('p', { class: 'error' }, say(e)));
    } finally {
      send.disabled = false;
    }
  });
  return form;
};

/** One view per kind of result; the raw JSON goes below, collapsed. */
const readable = (o) => {
  const parts = [];
  if (Array.isArray(o.names)) {
    // A tree at a glance (up to 100,000 names): text, not a table.
    const links = new Set(o.symlinks || []);
    parts.push(el('pre', { class: 'file names' }, o.names.map((n) => (links.has(n) ? `${n}  (symlink)` : n)).join('\n')));
  } else if (Array.isArray(o.entries)) {
    parts.push(table(o.entries.map((e) => ({ ...e, size: size(e.size), modified: when(e.modified) })), ['path', 'kind', 'size', 'modified']));
  } else if (Array.isArray(o.matches) && o.matches.length && o.matches[0].line !== undefined) {
    parts.push(table(o.matches, ['path', 'line_number', 'line']));
  } else if (Array.isArray(o.matches)) {
    parts.push(table(o.matches.map((m) => ({ ...m, size: size(m.size), modified: when(m.modified) })), ['path', 'kind', 'size', 'modified']));
  } else if (typeof o.content === 'string') {
    parts.push(el('pre', { class: 'file' }, o.content));
  } else if (o.kind && o.size !== undefined) {
    const facts = el('table', { class: 'facts' });
    [['path', o.path], ['kind', o.kind], ['size', size(o.size)], ['modified', when(o.modified)], ['read-only', o.readonly]]
      .filter(([, v]) => v !== undefined && v !== '')
      .forEach(([k, v]) => { const tr = el('tr'); tr.append(el('th', {}, k), el('td', {}, String(v))); facts.append(tr); });
    parts.push(facts);
  } else if (o.blob_id) {
    // An upload's handle: the file is on the server now.
    const p = el('p', { class: 'success' }, `✓ ${o.name} is on the server (${size(o.size)}, SHA-256 ${o.sha256.slice(0, 12)}…). `);
    p.append(el('a', { href: `/api/blobs/${o.blob_id}`, id: 'blob-link' }, 'Download it'));
    parts.push(p, sendBlob(o));
  } else if (o.digest || o.hash) {
    parts.push(el('p', {}, `${o.algorithm || 'hash'}: `), el('pre', { class: 'file' }, o.digest || o.hash));
  }
  if (o.truncated) parts.push(el('p', { class: 'muted' }, continuation(o)));
  return parts;
};

export const startRunner = () => {
  const runner = document.getElementById('runner');
  const select = document.getElementById('tool');
  if (!runner || !select) return;
  const tools = JSON.parse(document.getElementById('tools-data').textContent);
  const input = document.getElementById('input');
  const result = document.getElementById('result');
  const pick = () => {
    const tool = tools.find((t) => t.name === select.value);
    describe(document.getElementById('tool-description'), tool.description);
    input.value = JSON.stringify(skeleton(tool.inputSchema, tool.inputSchema), null, 2);
  };
  select.addEventListener('change', pick);
  // A safe default: a read that changes nothing.
  if (tools.some((t) => t.name === 'list_directory')) select.value = 'list_directory';
  pick();

  const runOnce = async () => {
    result.replaceChildren(el('p', { class: 'muted' }, 'Running…'));
    let body;
    try { body = JSON.parse(input.value || '{}'); } catch (e) {
      result.replaceChildren(el('p', { class: 'error' }, `The input is not valid JSON: ${e.message}`));
      return;
    }
    try {
      const out = await api('POST', `/api/devices/${runner.dataset.device}/calls`, { tool: select.value, input: body });
      if (out.kind === 'proposal') {
        await proposal(result, out.id);
        return;
      }
      const parts = readable(out.output || {});
      const raw = el('details', { class: 'raw' });
      raw.append(el('summary', {}, 'Raw JSON'), el('pre', { class: 'json' }, JSON.stringify(out.output, null, 2)));
      parts.push(raw);
      result.replaceChildren(...parts);
    } catch (e) {
      const parts = [el('p', { class: 'error' }, e.code && e.code !== 'unreachable' ? `${e.code}: ${say(e)}` : say(e))];
      // A batch's problems, each with its code.
      if (e.details && Array.isArray(e.details.problems)) parts.push(table(e.details.problems, ['code', 'index', 'path', 'message']));
      result.replaceChildren(...parts);
    }
  };
  const runButton = document.getElementById('run');
  // One call at a time: a double click must not make two proposals.
  runButton.addEventListener('click', async () => {
    if (runButton.disabled) return;
    runButton.disabled = true;
    try { await runOnce(); } finally { runButton.disabled = false; }
  });
};
