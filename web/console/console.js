// Herald's web console: a page per hash route, each built from the public
// API (api.js) with the credential the user signed in with. No framework
// and no build step; the modules are served as they are.
//
//   #/signin                      the admin token, or an app's key and master secret
//   #/apps                        apps (admin): list, create, the node's live figures
//   #/apps/{key}                  an app: devices, who is online, live figures, find a device
//   #/apps/{key}/devices/{id}     a device: channel, tags, sessions, pending messages, delete
//   #/apps/{key}/compose          compose and send a push
//   #/apps/{key}/messages         recent pushes and their delivery, recall
//   #/apps/{key}/messages/{id}    one push's delivery funnel, recall

import { call, credential, signIn, signOut, whenUnauthorized, ApiError } from './api.js';
import { h, replace, note, time } from './dom.js';
import { liveCard, watch } from './live.js';
import { appNames, loadApps } from './state.js';
import { pageApp, pageDevice } from './app.js';
import { pageCompose, pageMessages, pageMessage } from './messages.js';

const view = document.getElementById('view');
const nav = document.getElementById('nav');
const who = document.getElementById('who');

let signinMessage = '';
let generation = 0; // of the page on screen; a page whose render is older is dropped
let cleanups = []; // what the page on screen must stop when it goes (streams, timers)

// The page's context: render puts its nodes on screen unless another page
// has been asked for meanwhile; onLeave registers a clean-up.
function pageContext() {
  const gen = ++generation;
  return {
    current: () => gen === generation,
    render(...nodes) {
      if (gen === generation) replace(view, ...nodes);
    },
    onLeave(fn) {
      if (gen === generation) cleanups.push(fn);
      else fn();
    },
  };
}

whenUnauthorized((err) => {
  if (!credential()) return;
  signOut();
  appNames.clear();
  signinMessage = `The server refused the credentials (${err.code}: ${err.message}).`;
  go('#/signin');
});

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash; // hashchange routes
}

// parse splits a hash route into its path parts and query.
function parse(hash) {
  const [path, query] = (hash.replace(/^#\/?/, '') || '').split('?');
  return { parts: path.split('/').filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(query || '') };
}

async function route() {
  for (const fn of cleanups) fn();
  cleanups = [];
  const cred = credential();
  const { parts, query } = parse(location.hash);
  if (!cred) {
    layout(null);
    return pageSignIn(pageContext());
  }
  if (parts[0] === 'signin') {
    signOut();
    return route();
  }
  const home = cred.kind === 'admin' ? '#/apps' : '#/apps/' + encodeURIComponent(cred.appKey);
  if (parts[0] !== 'apps' || (parts.length === 1 && cred.kind !== 'admin')) return go(home);
  const app = parts[1];
  if (app && cred.kind === 'app' && app !== cred.appKey) return go(home);
  layout(cred, app, parts[2] || '');
  const ctx = pageContext();
  try {
    if (!app) return await pageApps(ctx);
    if (!parts[2]) return await pageApp(ctx, app);
    if (parts[2] === 'devices' && parts[3]) return await pageDevice(ctx, app, parts[3]);
    if (parts[2] === 'compose') return await pageCompose(ctx, app, query);
    if (parts[2] === 'messages' && parts[3]) return await pageMessage(ctx, app, parts[3]);
    if (parts[2] === 'messages') return await pageMessages(ctx, app);
    ctx.render(note('No such page.', 'bad'));
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return; // the sign-in page is on its way
    ctx.render(note(e instanceof ApiError ? `${e.code}: ${e.message}` : 'Could not reach the server: ' + e.message, 'bad'));
  }
}

// layout fills the header for who is signed in and where they are.
async function layout(cred, app, section) {
  replace(nav);
  replace(who);
  if (!cred) return;
  const link = (href, text, here) => h('a', { href, class: here ? 'here' : null }, text);
  if (cred.kind === 'admin') nav.append(link('#/apps', 'Apps', !app));
  if (app) {
    const base = '#/apps/' + encodeURIComponent(app);
    nav.append(
      link(base, appNames.get(app) || 'App', section === '' || section === 'devices'),
      link(base + '/compose', 'Compose', section === 'compose'),
      link(base + '/messages', 'Messages', section === 'messages'),
    );
  }
  who.append(
    h('span', {}, cred.kind === 'admin' ? 'admin' : 'app ' + (appNames.get(cred.appKey) || cred.appKey)),
    h('button', { type: 'button', id: 'sign-out', onclick: () => { signOut(); appNames.clear(); signinMessage = ''; go('#/signin'); } }, 'Sign out'),
  );
  if (app && !appNames.has(app)) {
    try {
      await loadApps();
      if (appNames.has(app) && credential()) layout(credential(), app, section);
    } catch (_) { /* the page shows the error */ }
  }
}

function pageSignIn(ctx) {
  const msg = signinMessage;
  const fail = h('div');
  async function enter(cred) {
    signIn(cred);
    signinMessage = '';
    try {
      const apps = await loadApps();
      go(cred.kind === 'admin' ? '#/apps' : '#/apps/' + encodeURIComponent(apps[0].app_key));
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401)) {
        signOut();
        replace(fail, note('Could not sign in: ' + e.message, 'bad'));
      }
    }
  }
  const token = h('input', { id: 'admin-token', type: 'password', autocomplete: 'off', required: true, placeholder: 'in herald-data/admin-token' });
  const key = h('input', { id: 'app-key', autocomplete: 'off', required: true, placeholder: 'ak_…' });
  const secret = h('input', { id: 'master-secret', type: 'password', autocomplete: 'off', required: true });
  ctx.render(h('div', { class: 'signin' },
    h('h1', {}, 'Sign in'),
    h('p', { class: 'muted' }, 'The console uses Herald\'s public API with your credential, kept in this tab only (sessionStorage).'),
    msg ? note(msg, 'bad') : null,
    fail,
    h('div', { class: 'grid' },
      h('form', { class: 'card', id: 'signin-admin', onsubmit: (e) => { e.preventDefault(); enter({ kind: 'admin', token: token.value.trim() }); } },
        h('h2', {}, 'Operator'),
        h('p', { class: 'muted small' }, 'The admin token sees every app and creates apps.'),
        h('div', { class: 'row' }, h('label', { class: 'grow' }, 'Admin token', token)),
        h('button', { class: 'primary', type: 'submit' }, 'Sign in as admin')),
      h('form', { class: 'card', id: 'signin-app', onsubmit: (e) => { e.preventDefault(); enter({ kind: 'app', appKey: key.value.trim(), secret: secret.value.trim() }); } },
        h('h2', {}, 'One app'),
        h('p', { class: 'muted small' }, 'An app\'s key and master secret see that app alone.'),
        h('div', { class: 'row' }, h('label', { class: 'grow' }, 'App key', key)),
        h('div', { class: 'row' }, h('label', { class: 'grow' }, 'Master secret', secret)),
        h('button', { class: 'primary', type: 'submit' }, 'Sign in to the app'))),
  ));
  token.focus();
}

async function pageApps(ctx) {
  const list = h('tbody');
  const created = h('div');
  const count = h('span', { class: 'muted', id: 'apps-count' });
  async function refresh() {
    const apps = await loadApps();
    replace(count, apps.length === 1 ? '1 app on this server' : apps.length + ' apps on this server');
    replace(list, apps.map((a) => h('tr', { dataset: { app: a.app_key } },
      h('td', {}, h('a', { href: '#/apps/' + encodeURIComponent(a.app_key) }, a.name)),
      h('td', {}, h('code', {}, a.app_key)),
      h('td', { class: 'muted' }, time(a.created_at)))));
    return apps;
  }
  const name = h('input', { id: 'new-app-name', required: true, placeholder: 'shop', maxlength: 128 });
  const form = h('form', { id: 'create-app', onsubmit: async (e) => {
    e.preventDefault();
    const button = form.querySelector('button');
    button.disabled = true;
    try {
      const app = await call('POST', '/v1/apps', { body: { name: name.value.trim() } });
      name.value = '';
      replace(created, h('div', { class: 'note ok', id: 'app-created' },
        h('p', {}, h('b', {}, `App ${app.name} created.`), ' Its master secret is shown this once: Herald keeps only a hash of it.'),
        h('dl', { class: 'props' },
          h('dt', {}, 'app_key'), h('dd', {}, h('span', { class: 'secret', id: 'created-key' }, app.app_key)),
          h('dt', {}, 'master_secret'), h('dd', {}, h('span', { class: 'secret', id: 'created-secret' }, app.master_secret))),
        h('p', { class: 'small' }, h('a', { href: '#/apps/' + encodeURIComponent(app.app_key) }, 'Open ' + app.name + ' →'))));
      await refresh();
    } catch (err) {
      if (err.status !== 401) replace(created, note(`${err.code}: ${err.message}`, 'bad'));
    } finally {
      button.disabled = false;
    }
  } },
  h('div', { class: 'row' }, h('label', { class: 'grow' }, 'Name', name), h('button', { class: 'primary', type: 'submit' }, 'Create app')));

  await refresh();
  ctx.render(
    h('div', { class: 'head' }, h('div', {}, h('h1', {}, 'Apps'), count)),
    liveCard(watch(ctx, ''), 'This node'),
    h('div', { class: 'card' }, h('h2', {}, 'New app'), form, created),
    h('div', { class: 'card' }, h('table', { id: 'apps' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', {}, 'App key'), h('th', {}, 'Created'))), list)),
  );
}

window.addEventListener('hashchange', route);
route();
