// fusion-host /devices: live status, pairing, approvals and the tool runner.
/** Says how to continue a truncated result, naming the field the tool gave. */
function continuation(o) {
  if (o.next_start_line != null) return `Truncated at the 1 MB bound: run again with start_line ${o.next_start_line} to continue, or use upload to move the whole file.`;
  if (o.next_offset != null) return `Truncated: run again with offset ${o.next_offset} to continue.`;
  return 'Truncated: a bound cut this result short.';
}

(() => {
  const csrf = document.body.dataset.csrf;
  const banner = document.getElementById('offline-banner');
  const api = async (method, url, body) => {
    let res;
    try {
      res = await fetch(url, {
        method,
        headers: { 'content-type': 'application/json', 'x-csrf-token': csrf || '' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (_) {
      // fetch rejects only when no answer came at all.
      throw { code: 'unreachable', message: 'cannot reach the server; check the connection and try again' };
    }
    const text = await res.text();
    let data = {};
    try { data = text ? JSON.parse(text) : {}; } catch (_) { data = { code: `http_${res.status}`, message: text.slice(0, 200) }; }
    if (!res.ok) throw data;
    return data;
  };
  const el = (tag, attrs = {}, text) => {
    const e = document.createElement(tag);
    Object.entries(attrs).forEach(([k, v]) => e.setAttribute(k, v));
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const say = (e) => (e && e.message ? e.message : String(e));

  // Re-render the live parts of this page ([data-live]) from the server, in
  // place: no reload, so an open pairing code or a half-typed input stays.
  let refreshing = null;
  let again = false;
  const refresh = async () => {
    if (refreshing) { again = true; return; }
    refreshing = (async () => {
      try {
        const res = await fetch(location.pathname + location.search, { headers: { accept: 'text/html' } });
        if (!res.ok) return;
        const fresh = new DOMParser().parseFromString(await res.text(), 'text/html');
        document.querySelectorAll('[data-live]').forEach((part) => {
          const next = part.id && fresh.getElementById(part.id);
          if (next) part.replaceChildren(...next.childNodes);
        });
        document.body.dataset.synced = String(Date.now());
      } catch (_) { /* the event stream's error handler says the server is away */ }
    })();
    await refreshing;
    refreshing = null;
    if (again) { again = false; refresh(); }
  };
  let pending = null;
  const soon = () => { clearTimeout(pending); pending = setTimeout(refresh, 150); };

  // Live events: online/offline badges in place; anything else that changes
  // what the page shows re-renders its live parts.
  if (csrf) {
    const events = new EventSource('/events');
    // A page left for another keeps no stream open: browsers allow only a
    // few connections per server, and a cached page's stream would hold one.
    window.addEventListener('pagehide', () => events.close());
    window.addEventListener('pageshow', (e) => { if (e.persisted) location.reload(); });
    let lost = false;
    events.addEventListener('open', () => {
      banner.hidden = true;
      // Back after an outage: what happened meanwhile was missed.
      if (lost) { lost = false; soon(); }
    });
    events.addEventListener('error', () => { lost = true; banner.hidden = false; });
    events.addEventListener('host', (msg) => {
      const ev = JSON.parse(msg.data);
      if (ev.type === 'device_online' || ev.type === 'device_offline') {
        const online = ev.type === 'device_online';
        // Only the status badge: a row also has its folders' access badges.
        document.querySelectorAll(`[data-badge="${ev.device_id}"]`).forEach((b) => {
          b.className = 'badge ' + (online ? 'online' : 'offline');
          b.textContent = online ? 'online' : 'offline';
        });
        const done = document.getElementById('pair-done');
        if (online && done && !document.getElementById('pairing').hidden && done.dataset.name) {
          done.textContent = `✓ ${done.dataset.name} connected`;
          done.hidden = false;
          clearInterval(window.pairTimer);
          document.getElementById('pair-expiry').hidden = true;
        }
      }
      if (ev.type === 'device_enrolled') {
        const done = document.getElementById('pair-done');
        if (done) done.dataset.name = ev.name;
      }
      if (ev.type !== 'call_started') soon();
    });
    events.addEventListener('lagged', soon);
  }

  // Add a device: mint a code, show it with its countdown and the command;
  // an expired code collapses and offers a new one.
  const add = document.getElementById('add-device');
  const mint = async () => {
    let pairing;
    try { pairing = await api('POST', '/api/pairing-codes'); } catch (e) {
      document.getElementById('pairing').hidden = false;
      document.getElementById('pair-code').textContent = '';
      document.getElementById('pair-command').textContent = `Could not mint a code: ${say(e)}`;
      return;
    }
    document.getElementById('pairing').hidden = false;
    document.getElementById('pair-expired').hidden = true;
    document.getElementById('pair-expiry').hidden = false;
    document.getElementById('pair-done').hidden = true;
    document.getElementById('pair-code').hidden = false;
    document.getElementById('pair-code').textContent = pairing.code;
    document.getElementById('pair-command').textContent = pairing.command;
    let left = pairing.expires_in_s;
    const tick = () => {
      if (left <= 0) {
        clearInterval(window.pairTimer);
        document.getElementById('pair-code').hidden = true;
        document.getElementById('pair-command').textContent = '';
        document.getElementById('pair-expiry').hidden = true;
        document.getElementById('pair-expired').hidden = false;
        return;
      }
      const m = Math.floor(left / 60), s = String(left % 60).padStart(2, '0');
      document.getElementById('pair-countdown').textContent = `${m}:${s}`;
      left -= 1;
    };
    clearInterval(window.pairTimer);
    tick();
    window.pairTimer = setInterval(tick, 1000);
  };
  if (add) {
    add.addEventListener('click', mint);
    document.getElementById('mint-again').addEventListener('click', mint);
    document.getElementById('copy-command').addEventListener('click', () =>
      navigator.clipboard && navigator.clipboard.writeText(document.getElementById('pair-command').textContent));
  }

  const decide = async (id, decision, where) => {
    try {
      const p = await api('POST', '/api/host/approve', { proposal_id: id, decision });
      const said = decision !== 'approve' ? 'Rejected'
        : p.status === 'applied' ? '✓ Applied'
        : `Not applied (${p.status})${p.error ? `: ${p.error.message}` : ''}`;
      if (where) where.replaceChildren(el('p', { class: p.status === 'applied' ? 'success' : 'error' }, said));
    } catch (e) {
      if (where) where.replaceChildren(el('p', { class: 'error' }, say(e)));
      else {
        const card = document.querySelector(`[data-proposal="${id}"]`);
        if (card) card.append(el('p', { class: 'error' }, say(e)));
      }
    }
    soon();
  };
  // Buttons inside live parts are re-rendered: listen once, on the document.
  document.addEventListener('click', async (event) => {
    const b = event.target.closest('[data-decide], [data-revoke], [data-rename]');
    if (!b || b.disabled) return;
    if (b.dataset.decide) {
      b.disabled = true;
      await decide(b.dataset.id, b.dataset.decide);
      return;
    }
    if (b.dataset.rename) {
      const name = prompt(`A new name for ${b.dataset.name}:`, b.dataset.name);
      if (name === null || name.trim() === '' || name === b.dataset.name) return;
      try { await api('POST', `/api/devices/${b.dataset.rename}/rename`, { name }); } catch (e) { alert(say(e)); }
      soon();
      return;
    }
    if (!confirm(`Revoke ${b.dataset.name}? It disconnects at once and must be paired again.`)) return;
    try { await api('POST', `/api/devices/${b.dataset.revoke}/revoke`); } catch (e) { alert(say(e)); }
    soon();
  });

  // The tool runner.
  const runner = document.getElementById('runner');
  if (!runner || !document.getElementById('tool')) return;
  const tools = JSON.parse(document.getElementById('tools-data').textContent);
  const select = document.getElementById('tool');
  const input = document.getElementById('input');
  // An input that runs as it is: every required field filled with a value
  // of its type (a nested object or array item built from its own schema).
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
  // A description as text: `code` spans become code, nothing else is markup.
  const describe = (target, text) => {
    target.replaceChildren();
    text.split('`').forEach((part, i) => target.append(i % 2 ? el('code', {}, part) : document.createTextNode(part)));
  };
  const pick = () => {
    const tool = tools.find((t) => t.name === select.value);
    describe(document.getElementById('tool-description'), tool.description);
    input.value = JSON.stringify(skeleton(tool.inputSchema, tool.inputSchema), null, 2);
  };
  select.addEventListener('change', pick);
  // A safe default: a read that changes nothing.
  if (tools.some((t) => t.name === 'list_directory')) select.value = 'list_directory';
  pick();

  const result = document.getElementById('result');
  const diffView = (diff) => {
    const pre = el('pre', { class: 'diff' });
    for (const line of diff.split('\n')) {
      const cls = line.startsWith('+++') || line.startsWith('---') ? 'meta' : line.startsWith('+') ? 'add'
        : line.startsWith('-') ? 'del' : line.startsWith('@@') ? 'hunk' : 'ctx';
      pre.append(el('span', { class: cls }, line), '\n');
    }
    return pre;
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
  // A plan without a diff (a rename batch, a move): its first rows as a table.
  const effectsView = (plan) => {
    const shown = plan.effects.slice(0, 20);
    // The folder every path shares, shown once; the rows then read as names.
    const all = shown.flatMap((e) => (e.to ? [e.path, e.to] : [e.path]));
    let prefix = all.length ? all.reduce((p, s) => { let i = 0; while (i < p.length && p[i] === s[i]) i++; return p.slice(0, i); }) : '';
    prefix = prefix.slice(0, Math.max(prefix.lastIndexOf('/'), prefix.lastIndexOf('\\')) + 1);
    const short = (p) => (p ? p.slice(prefix.length) : p);
    const rows = shown.map((e) => ({ what: e.op, path: short(e.path), 'new path': short(e.to), size: e.bytes }));
    const parts = [];
    if (prefix) parts.push(el('p', { class: 'muted folder' }, `In ${prefix.replace(/[\\/]$/, '')}:`));
    parts.push(table(rows, ['what', 'path', 'new path', 'size']));
    if (plan.effects_total > rows.length) parts.push(el('p', { class: 'muted more' }, `… and ${plan.effects_total - rows.length} more (${plan.effects_total} in all)`));
    return parts;
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
  // One view per kind of result; the raw JSON is always below, collapsed.
  const readable = (o) => {
    const parts = [];
    if (Array.isArray(o.entries)) {
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
  // A planned change with its diff or effects, and Approve / Reject.
  const proposalView = (out) => {
    const box = el('div', { class: 'proposal' });
    box.append(el('p', {}, out.plan.summary));
    if (out.plan.diff) box.append(diffView(out.plan.diff));
    else if (out.plan.effects.length) box.append(...effectsView(out.plan));
    const approve = el('button', { class: 'primary', id: 'approve' }, 'Approve');
    const reject = el('button', { id: 'reject' }, 'Reject');
    const actions = el('div');
    actions.append(approve, ' ', reject);
    approve.addEventListener('click', () => decide(out.id, 'approve', actions));
    reject.addEventListener('click', () => decide(out.id, 'reject', actions));
    box.append(actions);
    return box;
  };
  // An uploaded file offered as the source of a download: pick a device
  // and a path; the download is planned there, to approve like any change.
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
        where.replaceChildren(proposalView(out));
      } catch (e) {
        where.replaceChildren(el('p', { class: 'error' }, say(e)));
      } finally {
        send.disabled = false;
      }
    });
    return form;
  };
  const runButton = document.getElementById('run');
  // One call at a time: a double click must not make two proposals.
  runButton.addEventListener('click', async () => {
    if (runButton.disabled) return;
    runButton.disabled = true;
    try { await runOnce(); } finally { runButton.disabled = false; }
  });
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
        result.replaceChildren(proposalView(out));
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
})();
