// Proposals and devices: Approve / Reject on a proposal card (rendered by
// the server, here or fetched for the runner), and renaming or revoking a
// device.

import { api, el, fragment, say } from './http.js';
import { soon } from './live.js';

/** Puts the server's card of proposal `id` into `where`. */
export const showProposal = async (where, id) => {
  where.replaceChildren(...await fragment(`/proposals/${encodeURIComponent(id)}/card`));
};

/** Posts a decision and says how it ended in the card's `.outcome`. */
const decide = async (card, id, decision) => {
  const outcome = card && card.querySelector('.outcome');
  const show = (cls, text) => { if (outcome) outcome.replaceChildren(el('span', { class: cls }, text)); };
  try {
    const p = await api('POST', '/api/host/approve', { proposal_id: id, decision });
    if (decision !== 'approve') show('muted', 'Rejected');
    else if (p.status === 'applied') show('success', '✓ Applied');
    else show('error', `Not applied (${p.status})${p.error ? `: ${p.error.message}` : ''}`);
  } catch (e) {
    show('error', say(e));
  }
  soon();
};

/** An approved change's progress, as its device reports it, in its card's
 * `.outcome` until the decision's answer replaces it. The device's words
 * are text, never markup. */
const showProgress = (ev) => {
  if (ev.type !== 'call_progress' || !ev.proposal_id) return;
  const card = document.querySelector(`.proposal[data-proposal="${CSS.escape(ev.proposal_id)}"]`);
  const outcome = card && card.querySelector('.outcome');
  if (!outcome) return;
  const n = (v) => Number(v).toLocaleString();
  const what = ev.message || 'done';
  const text = ev.total ? `Applying: ${n(ev.done)} of ${n(ev.total)} ${what}` : `Applying: ${n(ev.done)} ${what}`;
  outcome.replaceChildren(el('span', { class: 'muted' }, text));
};

/** Listens once, on the document: the buttons inside live parts are
 * re-rendered, and cards arrive later in the runner. */
export const startProposals = () => {
  document.addEventListener('fusion:host', ({ detail: ev }) => showProgress(ev));
  document.addEventListener('click', async (event) => {
    const b = event.target.closest('[data-decide], [data-revoke], [data-rename]');
    if (!b || b.disabled) return;
    if (b.dataset.decide) {
      const card = b.closest('.proposal');
      card.querySelectorAll('[data-decide]').forEach((other) => { other.disabled = true; });
      await decide(card, b.dataset.id, b.dataset.decide);
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
};
