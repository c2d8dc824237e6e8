// Pushes: the composer, the list of recent pushes and one push's delivery.

import { call, q, ApiError } from './api.js';
import { h, replace, note, time, badge, audienceText, contentText } from './dom.js';
import { watch } from './live.js';

const enc = encodeURIComponent;

// list splits what a person typed (commas, spaces or lines) into values.
function list(s) {
  return s.split(/[\s,]+/).map((x) => x.trim()).filter(Boolean);
}

function field(label, input, grow = false) {
  return h('label', { class: grow ? 'grow' : null }, label, input);
}

export async function pageCompose(ctx, app, query) {
  const out = h('div', { id: 'send-result' });
  const preview = h('pre', { class: 'mono', id: 'preview' });

  const kindRadio = (name, value, text, checked) => h('label', {}, h('input', { type: 'radio', name, value, checked }), text);
  const aud = h('div', { class: 'tabs', id: 'audience-kind' },
    kindRadio('aud', 'ids', 'Registration IDs', true), kindRadio('aud', 'alias', 'Alias', false),
    kindRadio('aud', 'tags', 'Tags', false), kindRadio('aud', 'all', 'Broadcast', false));
  const ids = h('textarea', { id: 'aud-ids', placeholder: 'one or more registration IDs' });
  if (query.get('to')) ids.value = query.get('to');
  const alias = h('input', { id: 'aud-alias', placeholder: 'alice, bob' });
  const tagAny = h('input', { id: 'aud-tag', placeholder: 'any of' });
  const tagAll = h('input', { id: 'aud-tag-and', placeholder: 'all of' });
  const tagNone = h('input', { id: 'aud-tag-not', placeholder: 'none of' });
  const panes = {
    ids: h('div', { class: 'row' }, field('Registration IDs', ids, true)),
    alias: h('div', { class: 'row' }, field('Aliases', alias, true)),
    tags: h('div', { class: 'row' }, field('Tags: any of', tagAny, true), field('and all of', tagAll, true), field('and none of', tagNone, true)),
    all: h('p', { class: 'muted' }, 'Every device of the app.'),
  };
  const platforms = ['android', 'ios', 'web', 'other'].map((p) => h('label', { class: 'inline' }, h('input', { type: 'checkbox', value: p, name: 'platform' }), p));

  const body = h('div', { class: 'tabs', id: 'content-kind' },
    kindRadio('content', 'notification', 'Notification', true), kindRadio('content', 'message', 'Message (data)', false));
  const title = h('input', { id: 'n-title', placeholder: 'Hello' });
  const text = h('input', { id: 'n-body', placeholder: 'What the system shows' });
  const badgeN = h('input', { id: 'n-badge', type: 'number', min: 0 });
  const sound = h('input', { id: 'n-sound', placeholder: 'default' });
  const data = h('textarea', { id: 'm-data', placeholder: '{"any": "JSON the app handles"}' });
  const contentPanes = {
    notification: h('div', {}, h('div', { class: 'row' }, field('Title', title, true), field('Body', text, true)),
      h('div', { class: 'row' }, field('Badge', badgeN), field('Sound', sound))),
    message: h('div', { class: 'row' }, field('JSON', data, true)),
  };

  const ttl = h('input', { id: 'o-ttl', type: 'number', min: 0, placeholder: '86400' });
  const priority = h('select', { id: 'o-priority' }, h('option', { value: '' }, 'normal'), h('option', { value: 'high' }, 'high'));
  const collapse = h('input', { id: 'o-collapse', placeholder: 'score' });
  const sendAt = h('input', { id: 'o-send-at', type: 'datetime-local' });
  const channel = h('select', { id: 'o-channel' }, ['', 'own_first', 'vendor_first', 'own_only', 'vendor_only']
    .map((c) => h('option', { value: c }, c || "the app's default")));
  const idem = h('input', { id: 'o-idem', placeholder: 'optional' });

  const checked = (name) => form.querySelector(`input[name=${name}]:checked`).value;

  // build returns the push request the form describes, or throws with
  // what is wrong in it.
  function build() {
    const req = {};
    const a = checked('aud');
    if (a === 'all') req.audience = 'all';
    else if (a === 'ids') req.audience = { registration_id: list(ids.value) };
    else if (a === 'alias') req.audience = { alias: list(alias.value) };
    else {
      req.audience = {};
      if (list(tagAny.value).length) req.audience.tag = list(tagAny.value);
      if (list(tagAll.value).length) req.audience.tag_and = list(tagAll.value);
      if (list(tagNone.value).length) req.audience.tag_not = list(tagNone.value);
    }
    const ps = platforms.map((l) => l.firstChild).filter((c) => c.checked).map((c) => c.value);
    if (ps.length) req.platform = ps;
    if (checked('content') === 'notification') {
      const n = {};
      if (title.value) n.title = title.value;
      if (text.value) n.body = text.value;
      if (badgeN.value !== '') n.badge = Number(badgeN.value);
      if (sound.value) n.sound = sound.value;
      req.notification = n;
    } else {
      try {
        req.message = JSON.parse(data.value || 'null');
      } catch (e) {
        throw new Error('the message is not JSON: ' + e.message);
      }
    }
    const o = {};
    if (ttl.value !== '') o.ttl = Number(ttl.value);
    if (priority.value) o.priority = priority.value;
    if (collapse.value) o.collapse_id = collapse.value;
    if (sendAt.value) o.send_at = new Date(sendAt.value).toISOString();
    if (channel.value) o.channel = channel.value;
    if (idem.value) o.idempotency_key = idem.value;
    if (Object.keys(o).length) req.options = o;
    return req;
  }

  function update() {
    const a = checked('aud');
    for (const [k, pane] of Object.entries(panes)) pane.hidden = k !== a;
    const c = checked('content');
    for (const [k, pane] of Object.entries(contentPanes)) pane.hidden = k !== c;
    try {
      preview.textContent = 'POST /v1/push\n' + JSON.stringify(build(), null, 2);
    } catch (e) {
      preview.textContent = e.message;
    }
  }

  const send = h('button', { class: 'primary', type: 'submit', id: 'send' }, 'Send');
  const form = h('form', { id: 'compose', oninput: update, onchange: update, onsubmit: async (e) => {
    e.preventDefault();
    let req;
    try {
      req = build();
    } catch (err) {
      replace(out, note(err.message, 'bad'));
      return;
    }
    send.disabled = true;
    try {
      const res = await call('POST', '/v1/push', { app, body: req });
      replace(out, h('div', { class: 'note ok', id: 'sent' },
        h('b', {}, res.duplicate ? 'Already accepted (same idempotency key): ' : 'Accepted: '),
        h('a', { href: `#/apps/${enc(app)}/messages/${enc(res.msg_id)}`, id: 'sent-link' }, h('code', {}, res.msg_id)),
        ` — ${res.targeted} named device${res.targeted === 1 ? '' : 's'} targeted directly`,
        res.unknown ? h('div', { class: 'small' }, 'Unknown: ' + res.unknown.join(', ')) : null));
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 401) replace(out, note(err instanceof ApiError ? `${err.code}: ${err.message}` : err.message, 'bad'));
    } finally {
      send.disabled = false;
    }
  } },
  h('fieldset', {}, h('legend', {}, 'Audience'), aud, ...Object.values(panes),
    h('div', { class: 'row' }, h('span', { class: 'muted small' }, 'Platforms (none: all):'), platforms)),
  h('fieldset', {}, h('legend', {}, 'Content'), body, ...Object.values(contentPanes)),
  h('fieldset', {}, h('legend', {}, 'Options'),
    h('div', { class: 'row' }, field('TTL (seconds)', ttl), field('Priority', priority), field('Collapse ID', collapse),
      field('Send at', sendAt), field('Channel', channel), field('Idempotency key', idem))),
  h('div', { class: 'row' }, send));

  ctx.render(
    h('div', { class: 'head' }, h('h1', {}, 'Compose a push')),
    h('div', { class: 'grid', style: { gridTemplateColumns: 'minmax(0, 3fr) minmax(0, 2fr)' } },
      h('div', { class: 'card' }, form, out),
      h('div', { class: 'card' }, h('h2', {}, 'Request'), preview)),
  );
  update();
}

// funnelBars are a report's figures as bars against its targets.
function funnelBars(r) {
  const of = Math.max(r.targeted, 1);
  const row = (label, n, kind) => [
    h('span', {}, label),
    h('div', { class: 'bar' }, h('i', { class: kind, style: { width: Math.min(100, (100 * n) / of) + '%' } })),
    h('span', { class: 'n', id: 'funnel-' + kind }, n)];
  return h('div', { class: 'funnel', id: 'funnel' },
    row('targeted', r.targeted, 'targeted'),
    row('delivered', r.delivered, 'delivered'),
    row('pending', r.pending, 'pending'),
    row('expired', r.expired, 'expired'),
    row('recalled', r.recalled, 'recalled'),
    row('replaced', r.replaced, 'replaced'));
}

function miniFunnel(r) {
  const of = Math.max(r.targeted, 1);
  const part = (n, kind) => (n ? h('i', { class: kind, style: { width: (100 * n) / of + '%' } }) : null);
  return h('span', {}, h('span', { class: 'mini' }, part(r.delivered, 'delivered'), part(r.pending, 'pending'),
    part(r.expired, 'expired'), part(r.recalled, 'recalled'), part(r.replaced, 'replaced')),
  h('span', { class: 'small muted' }, ` ${r.delivered}/${r.targeted}`));
}

const recallable = (state) => state === 'pending' || state === 'scheduled';

async function recall(app, id, where) {
  try {
    await call('DELETE', '/v1/messages/' + enc(id), { app });
    return true;
  } catch (err) {
    if (err.status !== 401) replace(where, note(`${err.code}: ${err.message}`, 'bad'));
    return false;
  }
}

export async function pageMessages(ctx, app) {
  const tbody = h('tbody');
  const more = h('div');
  const problem = h('div');
  let next = '';
  let pages = 1;
  function rows(messages) {
    return messages.map((m) => h('tr', { dataset: { msg: m.msg_id, state: m.state } },
      h('td', { class: 'muted' }, time(m.accepted_at)),
      h('td', {}, h('a', { href: `#/apps/${enc(app)}/messages/${enc(m.msg_id)}` }, contentText(m)),
        h('div', { class: 'small muted mono' }, m.msg_id)),
      h('td', {}, audienceText(m.audience, m.platform)),
      h('td', {}, badge(m.state)),
      h('td', {}, miniFunnel(m)),
      h('td', {}, recallable(m.state) ? h('button', { type: 'button', class: 'danger recall', onclick: async (e) => {
        e.target.disabled = true;
        if (await recall(app, m.msg_id, problem)) await load();
      } }, 'Recall') : null)));
  }
  // load reads as many pages as are on screen, so that the list stays
  // where the reader left it.
  async function load() {
    let before = '';
    const all = [];
    for (let i = 0; i < pages; i++) {
      const page = await call('GET', '/v1/messages' + q({ limit: 25, before }), { app });
      all.push(...page.messages);
      next = page.next || '';
      if (!next) break;
      before = next;
    }
    replace(tbody, rows(all));
    replace(more, next ? h('button', { type: 'button', onclick: async () => { pages++; await load(); } }, 'Older') : null);
    return all;
  }
  const first = await load();
  // The app's pushes or deliveries moved (or may have, before the first
  // event): read the list again.
  const w = watch(ctx, app);
  w.changed(load);
  ctx.render(
    h('div', { class: 'head' }, h('h1', {}, 'Messages'),
      h('a', { href: `#/apps/${enc(app)}/compose` }, h('button', { class: 'primary', type: 'button' }, 'Compose a push'))),
    problem,
    h('div', { class: 'card' }, first.length || next
      ? h('table', { id: 'messages' }, h('thead', {}, h('tr', {}, ['Accepted', 'Content', 'Audience', 'State', 'Delivered', ''].map((t) => h('th', {}, t)))), tbody)
      : h('p', { class: 'muted' }, 'No pushes yet.'), more),
  );
}

export async function pageMessage(ctx, app, id) {
  const path = '/v1/messages/' + enc(id);
  const funnel = h('div');
  const state = h('span', { id: 'msg-state' });
  const channels = h('div');
  const actions = h('div', { id: 'msg-actions' });
  let r = await call('GET', path, { app });

  function show() {
    replace(state, badge(r.state));
    replace(funnel, funnelBars(r));
    const chans = Object.entries(r.channels || {}).filter(([k]) => k !== 'own');
    replace(channels, chans.length
      ? h('table', { id: 'channels' }, h('thead', {}, h('tr', {}, ['Channel', 'Sent', 'Failed', 'Gone', 'Skipped', 'Waiting'].map((t) => h('th', {}, t)))),
        h('tbody', {}, chans.map(([k, c]) => h('tr', {}, h('td', {}, k), h('td', {}, c.sent),
          h('td', {}, c.failed ? Object.entries(c.failed).map(([why, n]) => `${n} ${why}`).join('; ') : 0),
          h('td', {}, c.gone), h('td', {}, c.skipped || 0), h('td', {}, c.waiting)))))
      : h('p', { class: 'muted small' }, 'Not relayed: Herald\'s own connections only (delivered above).'));
    replace(actions, recallable(r.state) ? h('button', { type: 'button', class: 'danger', id: 'recall', onclick: async (e) => {
      e.target.disabled = true;
      if (await recall(app, id, actions)) await refresh();
    } }, 'Recall') : null);
  }
  async function refresh() {
    r = await call('GET', path, { app });
    show();
  }
  show();
  // Read again when the app's figures move (and at the first event, for
  // what moved before it), and when the message falls due or expires: no
  // polling.
  const w = watch(ctx, app);
  w.changed(refresh);
  for (const t of [r.send_at, r.expires_at]) {
    const ms = new Date(t).getTime() - Date.now();
    if (ms > 0 && ms < 2 ** 31 - 1) {
      const timer = setTimeout(() => refresh().catch(() => {}), ms + 500);
      ctx.onLeave(() => clearTimeout(timer));
    }
  }

  const content = r.notification
    ? h('dl', { class: 'props' }, ['title', 'body', 'badge', 'sound'].filter((k) => r.notification[k] !== undefined)
      .flatMap((k) => [h('dt', {}, k), h('dd', {}, String(r.notification[k]))]))
    : null;
  ctx.render(
    h('div', { class: 'head' },
      h('div', {}, h('h1', {}, contentText(r)), h('code', { class: 'muted', id: 'msg-id' }, r.msg_id), ' ', state),
      actions),
    h('div', { class: 'grid' },
      h('div', { class: 'card' }, h('h2', {}, 'Delivery'), funnel,
        h('p', { class: 'muted small' }, 'Targeted: the devices the push was for (a broadcast or tag push: those that match it now). ' +
          'Delivered: acknowledged by the device. What went out on a connection but is not acknowledged yet counts as pending.'),
        h('h2', {}, 'Relayed'), channels),
      h('div', { class: 'card' }, h('h2', {}, 'The push'), h('dl', { class: 'props' },
        h('dt', {}, 'Audience'), h('dd', {}, audienceText(r.audience, r.platform)),
        h('dt', {}, 'Accepted'), h('dd', {}, time(r.accepted_at)),
        h('dt', {}, 'Send at'), h('dd', {}, time(r.send_at)),
        h('dt', {}, 'Expires'), h('dd', {}, time(r.expires_at)),
        h('dt', {}, 'TTL'), h('dd', {}, r.options.ttl + ' s'),
        r.options.priority ? [h('dt', {}, 'Priority'), h('dd', {}, r.options.priority)] : null,
        r.options.collapse_id ? [h('dt', {}, 'Collapse ID'), h('dd', {}, r.options.collapse_id)] : null,
        r.options.channel ? [h('dt', {}, 'Channel'), h('dd', {}, r.options.channel)] : null),
      content ? [h('h2', { style: { marginTop: '14px' } }, 'Notification'), content] : null,
      r.message !== undefined ? [h('h2', { style: { marginTop: '14px' } }, 'Message'), h('pre', { class: 'mono' }, JSON.stringify(r.message, null, 2))] : null)),
  );
}
