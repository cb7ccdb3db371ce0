// Add a device: mint a code, show it with its countdown and the command;
// an expired code collapses and offers a new one, and the device that used
// it is named once it connects.

import { api, say } from './http.js';

const $ = (id) => document.getElementById(id);

export const startPairing = () => {
  const add = $('add-device');
  if (!add) return;
  let timer = null;
  // The name of the device that enrolled with the code shown.
  let enrolled = null;
  const stop = () => { clearInterval(timer); timer = null; };

  const mint = async () => {
    let pairing;
    try { pairing = await api('POST', '/api/pairing-codes'); } catch (e) {
      $('pairing').hidden = false;
      $('pair-code').textContent = '';
      $('pair-command').textContent = `Could not mint a code: ${say(e)}`;
      return;
    }
    enrolled = null;
    $('pairing').hidden = false;
    $('pair-expired').hidden = true;
    $('pair-expiry').hidden = false;
    $('pair-done').hidden = true;
    $('pair-code').hidden = false;
    $('pair-code').textContent = pairing.code;
    $('pair-command').textContent = pairing.command;
    let left = pairing.expires_in_s;
    const tick = () => {
      if (left <= 0) {
        stop();
        $('pair-code').hidden = true;
        $('pair-command').textContent = '';
        $('pair-expiry').hidden = true;
        $('pair-expired').hidden = false;
        return;
      }
      const m = Math.floor(left / 60), s = String(left % 60).padStart(2, '0');
      $('pair-countdown').textContent = `${m}:${s}`;
      left -= 1;
    };
    stop();
    tick();
    timer = setInterval(tick, 1000);
  };

  document.addEventListener('fusion:host', ({ detail: ev }) => {
    if (ev.type === 'device_enrolled') enrolled = ev.name;
    if (ev.type === 'device_online' && enrolled && !$('pairing').hidden) {
      $('pair-done').textContent = `✓ ${enrolled} connected`;
      $('pair-done').hidden = false;
      stop();
      $('pair-expiry').hidden = true;
    }
  });
  add.addEventListener('click', mint);
  $('mint-again').addEventListener('click', mint);
  $('copy-command').addEventListener('click', () =>
    navigator.clipboard && navigator.clipboard.writeText($('pair-command').textContent));
};
