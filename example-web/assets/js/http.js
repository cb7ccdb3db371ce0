// Talking to the app: JSON calls with the page's CSRF token, and building
// elements whose text is never markup.

/** The CSRF token of a signed-in page, or undefined. */
export const csrf = document.body.dataset.csrf;

/** A JSON call; rejects with the app's error body ({code, message}). */
export const api = async (method, url, body) => {
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

/** Part of a page the server rendered (`url` answers HTML), as nodes. */
export const fragment = async (url) => {
  let res;
  try {
    res = await fetch(url, { headers: { accept: 'text/html' } });
  } catch (_) {
    throw { code: 'unreachable', message: 'cannot reach the server; check the connection and try again' };
  }
  if (!res.ok) throw { code: `http_${res.status}`, message: `the server answered ${res.status} for ${url}` };
  const doc = new DOMParser().parseFromString(await res.text(), 'text/html');
  return [...doc.body.childNodes];
};

/** An element with attributes and, optionally, text. */
export const el = (tag, attrs = {}, text) => {
  const e = document.createElement(tag);
  Object.entries(attrs).forEach(([k, v]) => e.setAttribute(k, v));
  if (text !== undefined) e.textContent = text;
  return e;
};

/** An error as a sentence. */
export const say = (e) => (e && e.message ? e.message : String(e));
