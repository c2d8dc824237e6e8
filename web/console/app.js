// An app's pages: its overview (devices, who is online, live figures,
// finding a device) and a device's page.

import { call, q, ApiError } from './api.js';
import { h, replace, note, time, ago, badge, contentText, plural } from './dom.js';
import { liveCard, watch } from './live.js';
import { appNames, loadApps } from './state.js';

const enc = encodeURIComponent;

function split(obj, id) {
  const entries = Object.entries(obj || {}).filter(([, n]) => n > 0);
  return h('div', { class: 'split', id }, entries.length
    ? entries.sort().map(([k, n]) => h('span', {}, h('b', {}, n), ' ' + k))
    : h('span', {}, 'none'));
}

function deviceRows(app, devices) {
  return devices.map((d) => h('tr', { dataset: { device: d.registration_id } },
    h('td', {}, h('a', { href: `#/apps/${enc(app)}/devices/${enc(d.registration_id)}` }, h('code', {}, d.registration_id))),
    h('td', {}, d.platform),
    h('td', {}, d.alias || h('span', { class: 'muted' }, '–')),
    h('td', {}, d.tags.length ? d.tags.join(', ') : h('span', { class: 'muted' }, '–')),
    h('td', {}, d.channel.kind + (d.channel.inactive ? ' (inactive)' : ''))));
}

function deviceTable(id, app, devices) {
  return h('table', { id },
    h('thead', {}, h('tr', {}, ['Registration ID', 'Platform', 'Alias', 'Tags', 'Channel'].map((t) => h('th', {}, t)))),
    h('tbody', {}, deviceRows(app, devices)));
}

// pagedDevices is a table of the devices GET /v1/devices gives for query,
// with a button for the next page.
async function pagedDevices(id, app, query) {
  const first = await call('GET', '/v1/devices' + q({ ...query, limit: 25 }), { app });
  const table = deviceTable(id, app, first.devices);
  const more = h('div');
  let next = first.next;
  function button() {
    replace(more, next ? h('button', { type: 'button', onclick: async (e) => {
      e.target.disabled = true;
      const page = await call('GET', '/v1/devices' + q({ ...query, limit: 25, after: next }), { app });
      table.tBodies[0].append(...deviceRows(app, page.devices));
      next = page.next;
      button();
    } }, 'More') : null);
  }
  button();
  return h('div', {}, first.devices.length ? table : h('p', { class: 'muted' }, 'No devices.'), more);
}

export async function pageApp(ctx, app) {
  const [stats] = await Promise.all([
    call('GET', `/v1/apps/${enc(app)}/stats`, { app }),
    appNames.has(app) ? null : loadApps(),
  ]);
  const all = await pagedDevices('devices', app, {});
  const w = watch(ctx, app);

  const online = h('div', { class: 'figure', id: 'online-devices' }, stats.online.devices);
  let transports = split(stats.online.by_transport, 'online-transports');
  const transportBox = h('div', {}, transports);
  const lastMinute = h('span', { id: 'pushes-minute' }, stats.pushes.last_minute);
  const lastHour = h('b', {}, stats.pushes.last_hour);
  const sinceStart = h('b', {}, stats.pushes.since_start);
  w.on((ev) => {
    replace(online, String(ev.online_devices));
    replace(transportBox, split(ev.connections, 'online-transports'));
    replace(lastMinute, String(ev.pushes_last_minute));
    replace(lastHour, String(ev.pushes_last_hour));
    replace(sinceStart, String(ev.totals.pushes));
  });

  const results = h('div', { id: 'find-results' });
  const kind = h('select', { id: 'find-kind' },
    h('option', { value: 'id' }, 'Registration ID'), h('option', { value: 'alias' }, 'Alias'), h('option', { value: 'tag' }, 'Tag'));
  const term = h('input', { id: 'find-term', required: true, placeholder: 'what to look for' });
  const find = h('form', { id: 'find', onsubmit: async (e) => {
    e.preventDefault();
    const v = term.value.trim();
    try {
      if (kind.value === 'id') {
        await call('GET', '/v1/devices/' + enc(v), { app });
        location.hash = `#/apps/${enc(app)}/devices/${enc(v)}`;
      } else if (kind.value === 'alias') {
        const { devices } = await call('GET', '/v1/aliases/' + enc(v), { app });
        replace(results, devices.length ? deviceTable('found', app, devices) : note(`No device has the alias ${v}.`));
      } else {
        replace(results, await pagedDevices('found', app, { tag: v }));
      }
    } catch (err) {
      if (err instanceof ApiError && err.status !== 401) replace(results, note(`${err.code}: ${err.message}`, 'bad'));
      else if (!(err instanceof ApiError)) replace(results, note(err.message, 'bad'));
    }
  } }, h('div', { class: 'row' }, h('label', {}, 'By', kind), h('label', { class: 'grow' }, 'Find a device', term),
    h('button', { class: 'primary', type: 'submit' }, 'Find')));

  ctx.render(
    h('div', { class: 'head' },
      h('div', {}, h('h1', { id: 'app-name' }, appNames.get(app) || app), h('code', { class: 'muted' }, app)),
      h('a', { href: `#/apps/${enc(app)}/compose` }, h('button', { class: 'primary', type: 'button' }, 'Compose a push'))),
    h('div', { class: 'grid' },
      h('div', { class: 'card' }, h('h2', {}, 'Devices'),
        h('div', { class: 'figure', id: 'devices-total' }, stats.devices.total), split(stats.devices.by_platform, 'devices-platforms')),
      h('div', { class: 'card' }, h('h2', {}, 'Online now ', h('small', { class: 'muted' }, '(this node)')),
        online, transportBox),
      h('div', { class: 'card' }, h('h2', {}, 'Pushes accepted ', h('small', { class: 'muted' }, '(this node)')),
        h('div', { class: 'figure' }, lastMinute, h('small', {}, ' last minute')),
        h('div', { class: 'split' }, h('span', {}, lastHour, ' last hour'),
          h('span', {}, sinceStart, ' since the node started')))),
    liveCard(w, 'This app on this node'),
    h('div', { class: 'card' }, h('h2', {}, 'Find a device'), find, results),
    h('div', { class: 'card' }, h('h2', {}, 'All devices'), all),
  );
}

function channelText(ch) {
  const parts = [ch.kind];
  if (ch.token) parts.push(ch.token.length > 24 ? ch.token.slice(0, 20) + '…' : ch.token);
  if (ch.webpush) parts.push(ch.webpush.endpoint);
  if (ch.inactive) parts.push(`inactive since ${time(ch.inactive_at)}: ${ch.inactive}`);
  return parts.join(' · ');
}

export async function pageDevice(ctx, app, id) {
  const base = `/v1/devices/${enc(id)}`;
  const [d, pending] = await Promise.all([call('GET', base, { app }), call('GET', base + '/pending?limit=50', { app })]);
  const w = watch(ctx, app);

  const sessions = h('dd', { id: 'device-sessions' });
  const seen = h('dd', { id: 'device-seen' });
  function showSessions(list) {
    replace(sessions, list.length
      ? list.map((s) => h('div', {}, badge(s.transport, 'live'), ' since ' + time(s.since)))
      : h('span', { class: 'muted' }, 'none'));
    replace(seen, list.length
      ? 'online now, connected ' + ago(list[0].since)
      : h('span', { class: 'muted' }, 'not recorded: Herald keeps no last-seen time for a device that is not connected'));
  }
  showSessions(d.sessions);
  // The app's connections changed (or may have, before the first event):
  // this device's may have.
  w.changed(async () => showSessions((await call('GET', base, { app })).sessions), (ev) => JSON.stringify(ev.connections));

  const del = h('div', { id: 'delete-box' });
  function askDelete() {
    replace(del, h('button', { type: 'button', class: 'danger', id: 'delete-device', onclick: () => replace(del,
      h('span', {}, 'Delete this device, its inbox and its subscriptions? '),
      h('button', { type: 'button', class: 'danger', id: 'delete-confirm', onclick: async () => {
        try {
          await call('DELETE', base, { app });
          ctx.render(note('The device was deleted.', 'ok'), h('p', {}, h('a', { href: `#/apps/${enc(app)}` }, '← back to the app')));
        } catch (err) {
          if (err.status !== 401) replace(del, note(`${err.code}: ${err.message}`, 'bad'));
        }
      } }, 'Yes, delete'), ' ',
      h('button', { type: 'button', onclick: askDelete }, 'No')) }, 'Delete device'));
  }
  askDelete();

  const rows = pending.messages.map((m) => h('tr', {},
    h('td', {}, h('a', { href: `#/apps/${enc(app)}/messages/${enc(m.id)}` }, h('code', {}, m.id))),
    h('td', {}, contentText(m)),
    h('td', { class: 'muted' }, time(m.sent_at)),
    h('td', { class: 'muted' }, time(m.expires_at))));

  ctx.render(
    h('div', { class: 'head' },
      h('div', {}, h('h1', {}, 'Device'), h('code', { id: 'device-id' }, d.registration_id)),
      h('div', {}, h('a', { href: `#/apps/${enc(app)}/compose?to=${enc(id)}` }, h('button', { class: 'primary', type: 'button' }, 'Push to it')))),
    h('div', { class: 'card' }, h('dl', { class: 'props' },
      h('dt', {}, 'Platform'), h('dd', {}, d.platform),
      h('dt', {}, 'Alias'), h('dd', {}, d.alias || h('span', { class: 'muted' }, '–')),
      h('dt', {}, 'Tags'), h('dd', { id: 'device-tags' }, d.tags.length ? d.tags.join(', ') : h('span', { class: 'muted' }, '–')),
      h('dt', {}, 'Channel'), h('dd', {}, channelText(d.channel)),
      h('dt', {}, 'Online sessions'), sessions,
      h('dt', {}, 'Last seen'), seen,
      h('dt', {}, 'Registered'), h('dd', {}, time(d.created_at)),
      h('dt', {}, 'Updated'), h('dd', {}, time(d.updated_at)))),
    h('div', { class: 'card' },
      h('h2', {}, 'Pending messages ', h('small', { class: 'muted', id: 'pending-count' },
        pending.more ? 'more than ' + pending.messages.length : plural(pending.messages.length, 'message'))),
      rows.length
        ? h('table', { id: 'pending' }, h('thead', {}, h('tr', {}, ['ID', 'Content', 'Sent', 'Expires'].map((t) => h('th', {}, t)))), h('tbody', {}, rows))
        : h('p', { class: 'muted' }, 'Nothing waits for this device.')),
    h('div', { class: 'card' }, h('h2', {}, 'Delete'), del),
  );
}
