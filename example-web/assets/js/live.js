// Keeps the page current: the server's live events move the online badges
// in place, and anything else that changes what the page shows re-renders
// its live parts ([data-live]) from the server. Other modules hear each
// event as a `fusion:host` event on the document.

import { csrf } from './http.js';

let refreshing = null;
let again = false;

/** Re-renders the live parts in place: no reload, so an open pairing code
 * or a half-typed input stays. */
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
/** Refreshes the live parts shortly (several changes make one refresh). */
export const soon = () => { clearTimeout(pending); pending = setTimeout(refresh, 150); };

/** Follows the server's events while the page is shown. */
export const startLive = () => {
  if (!csrf) return;
  const banner = document.getElementById('offline-banner');
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
    }
    document.dispatchEvent(new CustomEvent('fusion:host', { detail: ev }));
    // A call starting or going on changes nothing the page lists.
    if (ev.type !== 'call_started' && ev.type !== 'call_progress') soon();
  });
  events.addEventListener('lagged', soon);
};
