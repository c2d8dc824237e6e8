// Herald's browser device client, an ES module with no build step.
//
//   import { register, connect } from 'https://herald.example/client.js';
//   const reg = await register('https://herald.example', { appKey: 'ak_...' });
//   const conn = connect(reg, { onMessage: (m) => show(m) });
//
// register keeps the registration in localStorage, so a page that loads again
// is the same device. connect opens a WebSocket, falls back to Server-Sent
// Events and then to long-polling when a transport cannot be reached,
// reconnects with jittered exponential back-off, acknowledges each message
// once onMessage has returned, and drops duplicates (delivery is at least
// once). The wire protocol is in docs/protocol.md.
//
// A cluster's nodes (any of which takes any device) are given as a list:
//
//   const reg = await register(['https://a.herald.example', 'https://b.herald.example'], { appKey });
//
// register asks them in turn until one answers, and connect moves on to the
// next when one cannot be reached, backing off only once all have failed in
// turn. A load balancer in front of them is a list of one.
//
// Web Push (RFC 8030/8291) through Herald, for pages that want to be sent
// to by any Web Push library (npm web-push, pywebpush...):
//
//   const sub = await webPushSubscribe(reg, { applicationServerKey: vapidPublicKey });
//   await sendToAppServer(sub);           // {endpoint, keys: {p256dh, auth}}
//   connect(reg, { onMessage, onWebPush: (text, m) => show(text) });
//
// webPushSubscribe keeps the subscription's keys (the private one as a JWK)
// in storage beside the registration; connect decrypts each push that came
// through an endpoint with them and hands the plaintext to onWebPush.
// decryptWebPush does the same for a message got some other way.
//
// A device on a vendor channel as well (Herald relays a push to its Web Push
// subscription with the same id): the service worker that shows a relayed
// push calls markSeen(registrationID, data.id), and connect then drops that
// message when its own connection brings it too (wasSeen).

const TRANSPORTS = ['ws', 'sse', 'poll'];

// Close codes and SSE close events after which reconnecting with the same
// credentials cannot help.
const FATAL_WS = { 4001: 'unauthorized', 4004: 'device_deleted', 4008: 'replaced' };

// The registration is kept by app key, not by server: the nodes of a
// cluster share their devices, so a page whose list of servers changes (a
// node added or retired, the list shuffled to spread the load) stays the
// same device. An app key is random per deployment, so two never share one.
function storageKey(appKey) {
  return `herald:${appKey}`;
}

// legacyKey is where registrations were kept before lists of servers, by
// server as well; register moves what it finds there.
function legacyKey(server, appKey) {
  return `herald:${server}:${appKey}`;
}

function trimServer(server) {
  return String(server || location.origin).trim().replace(/\/+$/, '');
}

// serverList takes one origin or a list of them (the page's own when none
// is given) and returns the list, trimmed.
function serverList(servers) {
  const list = (Array.isArray(servers) ? servers : [servers]).filter(Boolean).map(trimServer).filter(Boolean);
  return list.length ? list : [trimServer()];
}

// fetchAny sends one request to each server in turn until one answers with
// other than a temporary error (5xx, 429), and returns that answer; when
// all fail, the last one's answer or network error. A registration or
// subscription that a node made and died before answering is made again on
// the next: the first is never handed out, so it is harmless.
async function fetchAny(servers, path, init) {
  for (let i = 0; ; i++) {
    const last = i === servers.length - 1;
    try {
      const resp = await fetch(servers[i] + path, init);
      if (last || !(resp.status >= 500 || resp.status === 429)) return resp;
    } catch (e) {
      if (last) throw e;
    }
  }
}

// moveItem moves a stored item to another key, unless that key has one.
function moveItem(storage, from, to) {
  const v = storage.getItem(from);
  if (v === null) return;
  if (storage.getItem(to) === null) storage.setItem(to, v);
  storage.removeItem(from);
}

// HeraldError is an error answer from the server, or a fatal close.
export class HeraldError extends Error {
  constructor(code, message, status) {
    super(message || code);
    this.name = 'HeraldError';
    this.code = code; // a stable code: unauthorized, device_deleted, replaced, ...
    this.status = status || 0; // the HTTP status, when there was one
  }
}

async function errorOf(resp) {
  try {
    const body = await resp.json();
    if (body && body.error) return new HeraldError(body.error.code, body.error.message, resp.status);
  } catch (_) { /* not JSON */ }
  return new HeraldError('http_' + resp.status, resp.statusText, resp.status);
}

// register returns this browser's registration with the app, creating it on
// the server the first time and keeping it in storage (localStorage unless
// opts.storage is given). servers is an origin or a list of them (the nodes
// of one cluster), asked in turn until one answers. The kept registration
// is the app's, whichever server made it, and it takes the list of the
// latest call: reg.servers, with reg.server its first. opts: appKey
// (required), platform ('web'), alias, tags, fresh (true: drop a kept
// registration and create a new one).
export async function register(servers, opts = {}) {
  const list = serverList(servers);
  const { appKey, platform = 'web', alias, tags, fresh = false } = opts;
  if (!appKey) throw new HeraldError('bad_app_key', 'register needs opts.appKey');
  const storage = opts.storage || globalThis.localStorage;
  const key = storageKey(appKey);
  if (!fresh && storage) {
    const kept = keptRegistration(storage, appKey, list);
    if (kept) return kept;
  }
  const body = { app_key: appKey, platform };
  if (alias) body.alias = alias;
  if (tags && tags.length) body.tags = tags;
  const resp = await fetchAny(list, '/v1/devices', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (!resp.ok) throw await errorOf(resp);
  const d = await resp.json();
  const reg = {
    server: list[0], servers: list, app_key: appKey, registration_id: d.registration_id,
    device_secret: d.device_secret, platform: d.platform, alias: d.alias, tags: d.tags,
  };
  if (storage) storage.setItem(key, JSON.stringify(reg));
  return reg;
}

// keptRegistration returns the registration kept for appKey, with list as
// its servers, or null. One kept by an earlier client.js under a server of
// the list is moved to the app's key, with its Web Push keys.
function keptRegistration(storage, appKey, list) {
  const read = (key) => {
    try {
      const r = JSON.parse(storage.getItem(key) || 'null');
      return r && r.registration_id && r.device_secret ? r : null;
    } catch (_) {
      return null; // a broken entry: register again
    }
  };
  let kept = read(storageKey(appKey));
  for (let i = 0; !kept && i < list.length; i++) {
    if ((kept = read(legacyKey(list[i], appKey)))) {
      moveItem(storage, legacyWebPushKey(list[i], kept), webPushStorageKey(kept));
      storage.removeItem(legacyKey(list[i], appKey));
    }
  }
  if (!kept) return null;
  const reg = { ...kept, server: list[0], servers: list };
  if (JSON.stringify(reg) !== JSON.stringify(kept)) storage.setItem(storageKey(appKey), JSON.stringify(reg));
  return reg;
}

// forget drops the kept registration, for example after the server said the
// device was deleted; the next register creates a new one.
// Its Web Push keys go too: the device's subscriptions end with it.
export function forget(reg, storage = globalThis.localStorage) {
  if (!storage) return;
  storage.removeItem(storageKey(reg.app_key));
  for (const s of serverList(reg.servers || reg.server)) {
    storage.removeItem(legacyKey(s, reg.app_key));
    if (reg.registration_id) storage.removeItem(legacyWebPushKey(s, reg));
  }
  if (reg.registration_id) storage.removeItem(webPushStorageKey(reg));
}

// Recent remembers the last max message IDs, to drop duplicates.
class Recent {
  constructor(max) { this.max = max; this.set = new Set(); }
  has(id) { return this.set.has(id); }
  add(id) {
    this.set.add(id);
    if (this.set.size > this.max) this.set.delete(this.set.values().next().value);
  }
}

// The IDs a device has handed to the app, shared by all of its contexts (its
// pages and its service worker) and kept across reloads, in IndexedDB. A
// message may reach a device twice: through its vendor's channel (a Web
// Push the service worker showed, relayed by Herald with the same id) and
// through its own connection. A service worker that shows a relayed push
// calls markSeen(registrationID, data.id); connect then acknowledges that
// message without handing it to onMessage again, and marks what it hands
// over itself. Where IndexedDB is missing or refused, both do nothing.
const SEEN_DB = 'herald-seen';
const SEEN_KEEP = 4096; // IDs kept; the oldest go first
let seenDB = null;

function openSeen() {
  if (!seenDB) {
    seenDB = new Promise((resolve) => {
      if (!globalThis.indexedDB) return resolve(null);
      const req = indexedDB.open(SEEN_DB, 1);
      req.onupgradeneeded = () => req.result.createObjectStore('ids').createIndex('at', 'at');
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => resolve(null);
      req.onblocked = () => resolve(null);
    });
  }
  return seenDB;
}

function seenRequest(mode, fn) {
  return openSeen().then((db) => new Promise((resolve) => {
    if (!db) return resolve(undefined);
    let tx;
    try { tx = db.transaction('ids', mode); } catch (_) { return resolve(undefined); }
    const req = fn(tx.objectStore('ids'));
    tx.oncomplete = () => resolve(req && req.result);
    tx.onerror = tx.onabort = () => resolve(undefined);
  }));
}

// markSeen records that the app was handed message id of the device
// registrationID, in this context or another (see above).
export async function markSeen(registrationID, id) {
  await seenRequest('readwrite', (ids) => {
    ids.put({ at: Date.now() }, registrationID + ' ' + id);
    const count = ids.count();
    count.onsuccess = () => {
      if (count.result <= SEEN_KEEP) return;
      let extra = count.result - SEEN_KEEP;
      ids.index('at').openKeyCursor().onsuccess = (e) => {
        const c = e.target.result;
        if (c && extra-- > 0) { ids.delete(c.primaryKey); c.continue(); }
      };
    };
    return null;
  });
}

// wasSeen reports whether markSeen recorded id for registrationID.
export async function wasSeen(registrationID, id) {
  const v = await seenRequest('readonly', (ids) => ids.get(registrationID + ' ' + id));
  return v !== undefined;
}

// backoff returns a delay for the nth consecutive failure: full jitter over
// an exponential ceiling, so that many clients do not come back at once.
function backoff(n, base, max) {
  return Math.random() * Math.min(max, base * 2 ** Math.min(n, 20));
}

// connect receives reg's pushes until close() is called or the server says
// not to come back. opts:
//   onMessage(m)      called once per message, in order; it may return a
//                     promise. The message is acknowledged after it returns;
//                     if it throws, it is not, and comes again later.
//   onStatus(s)       {state: 'connecting'|'open'|'waiting'|'stopped', transport, server}
//   onError(err)      a HeraldError after which the client stopped (the
//                     registration is unknown or deleted, or replaced)
//   onWebPush(text, m, bytes)  when given, a message that came through a Web
//                     Push endpoint (m.message.webpush) is decrypted with the
//                     keys webPushSubscribe kept and handed here instead of to
//                     onMessage: text is the plaintext as UTF-8, bytes the
//                     raw Uint8Array ('' and empty for a push without a
//                     body). Acked as onMessage is. A push that does not
//                     decrypt (no keys kept for its subscription, the older
//                     aesgcm coding, a corrupt body) goes to onMessage as is.
//   webPushKeys       the keys to decrypt with (default: webPushKeys(reg,
//                     storage), read again for each push)
//   storage           where register kept things (default localStorage)
//   servers           an origin or a list of them (default reg.servers, or
//                     reg.server). A connection that fails or drops moves on
//                     to the next at once; back-off starts once every server
//                     has failed in turn, and a transport is given up after
//                     two such rounds that never got through.
//   transports        which to try, in order; default ['ws', 'sse', 'poll']
//   minDelay, maxDelay  back-off bounds in ms (500, 30000)
// It returns {close(), transport, server}.
export function connect(reg, opts = {}) {
  const servers = serverList(opts.servers || reg.servers || reg.server);
  const transports = (opts.transports || TRANSPORTS).filter((t) => TRANSPORTS.includes(t));
  const minDelay = opts.minDelay ?? 500;
  const maxDelay = opts.maxDelay ?? 30000;
  const onMessage = opts.onMessage || (() => {});
  const onStatus = opts.onStatus || (() => {});
  const onError = opts.onError || ((e) => console.error('herald:', e));
  const onWebPush = opts.onWebPush;
  const seen = new Recent(1024);
  const authHeader = 'Basic ' + btoa(reg.registration_id + ':' + reg.device_secret);
  const query = 'registration_id=' + encodeURIComponent(reg.registration_id) +
    '&device_secret=' + encodeURIComponent(reg.device_secret);

  let index = 0; // the transport in use, in transports
  let si = 0; // the server in use, in servers
  let everOpen = false; // the current transport has worked at least once
  let failures = 0; // consecutive failures, on any server, for back-off and fallback
  let stopped = false;
  let current = null; // {close()} of the open attempt
  let timer = null;
  let chain = Promise.resolve(); // onMessage calls, one after another
  let lastEventId = ''; // SSE resume point

  const handle = {
    close() { stop(null); },
    get transport() { return transports[index]; },
    get server() { return servers[si]; },
  };

  function status(state) { onStatus({ state, transport: transports[index], server: servers[si] }); }

  function stop(err) {
    if (stopped) return;
    stopped = true;
    clearTimeout(timer);
    if (current) current.close();
    status('stopped');
    if (err) onError(err);
  }

  // opened: the transport reached the server and is authenticated.
  function opened() {
    everOpen = true;
    failures = 0;
    status('open');
  }

  // failed: the attempt ended; try the next server at once, and once each
  // has failed in turn (a round), reconnect after a back-off, maybe on the
  // next transport. With one server a round is one failure.
  function failed() {
    current = null;
    if (stopped) return;
    failures++;
    si = (si + 1) % servers.length;
    if (failures % servers.length !== 0) {
      start(); // a dead node costs one failed attempt, not a back-off
      return;
    }
    const rounds = failures / servers.length;
    if (!everOpen && rounds >= 2 && index < transports.length - 1) {
      index++; // this transport does not get through here: try the next now
      failures = 0;
      start();
      return;
    }
    status('waiting');
    timer = setTimeout(start, backoff(rounds - 1, minDelay, maxDelay));
  }

  // handleMessage hands m to onWebPush decrypted when it is a Web Push
  // and the app asked for that, to onMessage otherwise.
  async function handleMessage(m) {
    if (onWebPush && m && m.message && m.message.webpush) {
      let bytes;
      try {
        bytes = await decryptWebPush(opts.webPushKeys || webPushKeys(reg, opts.storage), m);
      } catch (e) {
        console.warn('herald: a web push does not decrypt; it goes to onMessage as is:', e);
        return onMessage(m);
      }
      return onWebPush(new TextDecoder().decode(bytes), m, bytes);
    }
    return onMessage(m);
  }

  // deliver runs onMessage for m unless it is a duplicate, then acks it
  // with ack(ids). Duplicates are acked again: the first ack may be lost.
  function deliver(m, ack) {
    chain = chain.then(async () => {
      if (stopped) return;
      if (!seen.has(m.id) && !(await wasSeen(reg.registration_id, m.id))) {
        try {
          await handleMessage(m);
        } catch (e) {
          console.error('herald: onMessage failed; the message comes again later', e);
          return;
        }
        await markSeen(reg.registration_id, m.id);
      }
      seen.add(m.id);
      ack([m.id]);
    });
  }

  // postAck gathers the IDs acked in one turn of the event loop into one
  // POST /v1/inbox/ack to the server in use; flushed is the promise of the
  // last one.
  let ackIDs = [];
  let flushed = Promise.resolve();
  function postAck(ids) {
    if (ackIDs.length === 0) {
      flushed = new Promise((resolve) => setTimeout(resolve, 0)).then(async () => {
        const batch = ackIDs;
        ackIDs = [];
        try {
          await fetch(servers[si] + '/v1/inbox/ack', {
            method: 'POST',
            headers: { 'Content-Type': 'application/json', Authorization: authHeader },
            body: JSON.stringify({ ids: batch }),
          });
        } catch (_) { /* not acked: the message comes again, and is dropped as a duplicate */ }
      });
    }
    ackIDs.push(...ids);
  }

  // probe asks server whether the credentials still hold, after a
  // transport failed in a way that hides the status (EventSource).
  async function probe(server) {
    try {
      const resp = await fetch(server + '/v1/inbox?limit=1', { headers: { Authorization: authHeader } });
      if (resp.status === 401) return errorOf(resp);
    } catch (_) { /* unreachable: an ordinary failure */ }
    return null;
  }

  function start() {
    if (stopped) return;
    status('connecting');
    const t = transports[index];
    if (t === 'ws') current = openWS();
    else if (t === 'sse') current = openSSE();
    else current = openPoll();
  }

  function openWS() {
    const url = servers[si].replace(/^http/, 'ws') + '/v1/inbox/ws?' + query;
    let sock;
    try {
      sock = new WebSocket(url);
    } catch (_) {
      setTimeout(failed, 0);
      return { close() {} };
    }
    let watchdog = null;
    let limit = 0; // ms of server silence before the connection counts as dead
    const alive = () => {
      if (!limit) return;
      clearTimeout(watchdog);
      watchdog = setTimeout(() => sock.close(), limit);
    };
    sock.onmessage = (ev) => {
      let f;
      try { f = JSON.parse(ev.data); } catch (_) { return; }
      alive();
      switch (f.type) {
        case 'hello':
          limit = (f.ping_interval || 30) * 2500;
          alive();
          opened();
          break;
        case 'message':
          deliver(f.message, (ids) => {
            if (sock.readyState === WebSocket.OPEN) sock.send(JSON.stringify({ type: 'ack', ids }));
          });
          break;
        case 'ping':
          sock.send('{"type":"pong"}');
          break;
        case 'error':
          console.warn('herald: the server refused a frame:', f.code, f.message);
          break;
      }
    };
    sock.onclose = (ev) => {
      clearTimeout(watchdog);
      if (FATAL_WS[ev.code]) {
        stop(new HeraldError(FATAL_WS[ev.code], ev.reason));
        return;
      }
      failed();
    };
    return { close() { clearTimeout(watchdog); sock.onclose = null; sock.close(1000); } };
  }

  function openSSE() {
    const server = servers[si];
    let url = server + '/v1/inbox/stream?' + query;
    if (lastEventId) url += '&last_event_id=' + encodeURIComponent(lastEventId);
    const es = new EventSource(url);
    let done = false;
    const end = async (err) => {
      if (done) return;
      done = true;
      es.close();
      if (err) { stop(err); return; }
      if (!everOpen) {
        const e = await probe(server);
        if (e) { stop(e); return; }
      }
      failed();
    };
    es.addEventListener('hello', () => opened());
    es.onmessage = (ev) => {
      let m;
      try { m = JSON.parse(ev.data); } catch (_) { return; }
      if (ev.lastEventId) lastEventId = ev.lastEventId;
      deliver(m, postAck);
    };
    es.addEventListener('close', (ev) => {
      let c = {};
      try { c = JSON.parse(ev.data); } catch (_) { /* keep defaults */ }
      end(c.reconnect === false ? new HeraldError(c.code || 'closed') : null);
    });
    // EventSource would retry by itself at a fixed pace; the client does
    // it with back-off instead, resuming from the last event it saw.
    es.onerror = () => end(null);
    return { close() { done = true; es.close(); } };
  }

  function openPoll() {
    const server = servers[si];
    const ctl = new AbortController();
    let closed = false;
    (async () => {
      // The first poll returns at once, so the client knows that the
      // credentials hold and drains what waits; then it long-polls.
      let wait = 0;
      while (!closed) {
        let resp;
        try {
          resp = await fetch(server + '/v1/inbox?wait=' + wait, { headers: { Authorization: authHeader }, signal: ctl.signal });
          wait = 30;
        } catch (_) {
          if (!closed) failed();
          return;
        }
        if (resp.status === 401) { stop(await errorOf(resp)); return; }
        if (!resp.ok) { if (!closed) failed(); return; }
        if (!everOpen || failures) opened();
        let body;
        try { body = await resp.json(); } catch (_) { if (!closed) failed(); return; }
        for (const m of body.messages || []) deliver(m, postAck);
        await chain;
        await flushed; // acks go out before the next poll, so it does not return them again
      }
    })();
    return { close() { closed = true; ctl.abort(); } };
  }

  start();
  return handle;
}

// ---- Web Push (RFC 8030 subscriptions, RFC 8291 message encryption) ----

// A registration's Web Push keys are kept beside it, by app key; before
// lists of servers, by server as well (legacyWebPushKey).
function webPushStorageKey(reg) {
  return storageKey(reg.app_key) + ':webpush:' + reg.registration_id;
}

function legacyWebPushKey(server, reg) {
  return legacyKey(trimServer(server), reg.app_key) + ':webpush:' + reg.registration_id;
}

// b64url encodes bytes as base64url without padding.
function b64url(bytes) {
  let s = '';
  for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

// unb64url decodes base64url (or standard base64), padded or not.
function unb64url(s) {
  s = String(s).replace(/=+$/, '').replace(/-/g, '+').replace(/_/g, '/');
  const bin = atob(s + '='.repeat((4 - (s.length % 4)) % 4));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function subtle() {
  const s = globalThis.crypto && globalThis.crypto.subtle;
  if (!s) throw new HeraldError('webpush_no_crypto', 'Web Push needs WebCrypto, which browsers give only to secure contexts (https, or http://localhost)');
  return s;
}

// webPushKeys returns the Web Push keys kept for reg, by subscription ID:
// {[id]: {id, endpoint, label, application_server_key, p256dh, auth, jwk}}.
// jwk is the subscription's private key; keep it from other eyes.
export function webPushKeys(reg, storage = globalThis.localStorage) {
  if (!storage) return {};
  let raw = storage.getItem(webPushStorageKey(reg));
  // A registration that register has not seen since the keys moved (a
  // service worker's copy) still finds them where they were.
  for (const s of raw === null ? serverList(reg.servers || reg.server) : []) {
    if ((raw = storage.getItem(legacyWebPushKey(s, reg))) !== null) break;
  }
  try {
    return JSON.parse(raw || '{}') || {};
  } catch (_) {
    return {};
  }
}

function toJSONSubscription(k) {
  return { endpoint: k.endpoint, keys: { p256dh: k.p256dh, auth: k.auth } };
}

// webPushSubscribe gives reg a Web Push subscription on its server and
// returns what to hand the application server: {endpoint, keys: {p256dh,
// auth}} in base64url, the shape of a browser's PushSubscription.toJSON().
// It generates the RFC 8291 keys here (a P-256 key pair and a 16-byte auth
// secret; Herald never sees them) and keeps them in storage, so that
// connect and decryptWebPush can open the pushes. opts:
//   applicationServerKey  the application server's VAPID public key
//                         (base64url string or bytes): Herald then takes
//                         only pushes it signed. Omit for unsigned pushes.
//   label                 the app's name for the subscription, sent with
//                         each push (m.message.webpush.label)
//   storage               default localStorage
//   fresh                 true: a new subscription even if one with the
//                         same key and label is kept (it is by default
//                         returned again, as pushManager.subscribe does)
export async function webPushSubscribe(reg, opts = {}) {
  const storage = opts.storage || globalThis.localStorage;
  let ask = opts.applicationServerKey || '';
  if (typeof ask !== 'string') ask = b64url(ask);
  ask = ask ? b64url(unb64url(ask)) : ''; // one spelling, to compare
  const label = opts.label || '';
  const kept = webPushKeys(reg, storage);
  if (!opts.fresh) {
    for (const k of Object.values(kept)) {
      if ((k.application_server_key || '') === ask && (k.label || '') === label) return toJSONSubscription(k);
    }
  }
  const s = subtle();
  const pair = await s.generateKey({ name: 'ECDH', namedCurve: 'P-256' }, true, ['deriveBits']);
  const p256dh = b64url(await s.exportKey('raw', pair.publicKey));
  const jwk = await s.exportKey('jwk', pair.privateKey);
  const auth = b64url(crypto.getRandomValues(new Uint8Array(16)));
  const body = {};
  if (ask) body.application_server_key = ask;
  if (label) body.label = label;
  const resp = await fetchAny(serverList(reg.servers || reg.server), '/v1/webpush/subscriptions', {
    method: 'POST',
    headers: {
      'Content-Type': 'application/json',
      Authorization: 'Basic ' + btoa(reg.registration_id + ':' + reg.device_secret),
    },
    body: JSON.stringify(body),
  });
  if (!resp.ok) throw await errorOf(resp);
  const sub = await resp.json();
  const k = { id: sub.id, endpoint: sub.endpoint, label, application_server_key: ask, p256dh, auth, jwk };
  kept[sub.id] = k;
  if (storage) storage.setItem(webPushStorageKey(reg), JSON.stringify(kept));
  return toJSONSubscription(k);
}

// webPushUnsubscribe revokes the kept subscription whose endpoint (or ID)
// this is, and forgets its keys; its endpoint answers 410 from now on.
export async function webPushUnsubscribe(reg, endpointOrID, storage = globalThis.localStorage) {
  const kept = webPushKeys(reg, storage);
  const k = Object.values(kept).find((x) => x.endpoint === endpointOrID || x.id === endpointOrID);
  const id = k ? k.id : endpointOrID;
  const resp = await fetchAny(serverList(reg.servers || reg.server), '/v1/webpush/subscriptions/' + encodeURIComponent(id), {
    method: 'DELETE',
    headers: { Authorization: 'Basic ' + btoa(reg.registration_id + ':' + reg.device_secret) },
  });
  if (!resp.ok && resp.status !== 404) throw await errorOf(resp);
  if (k && storage) {
    delete kept[k.id];
    storage.setItem(webPushStorageKey(reg), JSON.stringify(kept));
  }
}

async function hkdf(salt, ikm, info, length) {
  const s = subtle();
  const key = await s.importKey('raw', ikm, 'HKDF', false, ['deriveBits']);
  return new Uint8Array(await s.deriveBits({ name: 'HKDF', hash: 'SHA-256', salt, info }, key, length * 8));
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let i = 0;
  for (const p of parts) { out.set(p, i); i += p.length; }
  return out;
}

const utf8 = (s) => new TextEncoder().encode(s);

// decryptWebPush returns the plaintext (a Uint8Array; empty for a push
// without a body) of a Herald message that came through a Web Push
// endpoint; message may also be its message.webpush object. keys is what
// webPushKeys returns (the subscription is looked up by ID), or one entry of
// it. Only the aes128gcm coding is read (RFC 8291 with RFC 8188). Errors are
// HeraldErrors: webpush_no_keys, webpush_unsupported_encoding,
// webpush_decrypt.
export async function decryptWebPush(keys, message) {
  const w = (message && message.message && message.message.webpush) || (message && message.webpush) || message;
  if (!w || typeof w !== 'object') throw new HeraldError('webpush_decrypt', 'not a web push message');
  const k = keys && keys.jwk ? keys : keys && keys[w.subscription];
  if (!k || !k.jwk || !k.auth || !k.p256dh) {
    throw new HeraldError('webpush_no_keys', 'no keys kept for subscription ' + w.subscription);
  }
  const fail = (why) => new HeraldError('webpush_decrypt', 'web push does not decrypt: ' + why);
  let body;
  try { body = unb64url(w.data || ''); } catch (_) { throw fail('data is not base64url'); }
  if (body.length === 0) return body;
  const enc = String((w.headers || {})['content-encoding'] || '').toLowerCase();
  if (enc !== 'aes128gcm') throw new HeraldError('webpush_unsupported_encoding', 'unsupported content encoding ' + JSON.stringify(enc));

  // Header (RFC 8188 §2.1): salt(16) rs(4) idlen(1) keyid(idlen); the key
  // ID is the application server's public key (RFC 8291 §4).
  if (body.length < 21) throw fail('shorter than the aes128gcm header');
  const salt = body.subarray(0, 16);
  const rs = new DataView(body.buffer, body.byteOffset + 16, 4).getUint32(0);
  const idlen = body[20];
  if (body.length < 21 + idlen) throw fail('shorter than the aes128gcm header');
  if (rs < 18) throw fail('record size ' + rs + ' below 18');
  const asPublic = body.slice(21, 21 + idlen);
  let records = body.subarray(21 + idlen);
  if (records.length === 0) throw fail('no records');

  const s = subtle();
  const curve = { name: 'ECDH', namedCurve: 'P-256' };
  let secret;
  try {
    const priv = await s.importKey('jwk', k.jwk, curve, false, ['deriveBits']);
    const pub = await s.importKey('raw', asPublic, curve, false, []);
    secret = new Uint8Array(await s.deriveBits({ name: 'ECDH', public: pub }, priv, 256));
  } catch (e) {
    throw fail('the key ID is not a P-256 public key (' + e + ')');
  }
  // RFC 8291 §3.4: IKM from the ECDH secret, salted with the auth secret.
  const uaPublic = unb64url(k.p256dh);
  const ikm = await hkdf(unb64url(k.auth), secret, concat(utf8('WebPush: info\0'), uaPublic, asPublic), 32);
  // RFC 8188 §2.2, §2.3: content key and nonce from the salt.
  const cek = await hkdf(salt, ikm, utf8('Content-Encoding: aes128gcm\0'), 16);
  const nonce = await hkdf(salt, ikm, utf8('Content-Encoding: nonce\0'), 12);
  const aes = await s.importKey('raw', cek, 'AES-GCM', false, ['decrypt']);

  const out = [];
  for (let seq = 0; records.length > 0; seq++) {
    const rec = records.subarray(0, Math.min(rs, records.length));
    records = records.subarray(rec.length);
    const last = records.length === 0;
    const iv = nonce.slice(); // NONCE XOR seq (RFC 8188 §2.3)
    for (let i = 0; i < 4; i++) iv[11 - i] ^= (seq >>> (8 * i)) & 0xff;
    let plain;
    try {
      plain = new Uint8Array(await s.decrypt({ name: 'AES-GCM', iv, tagLength: 128 }, aes, rec));
    } catch (_) {
      throw fail('record ' + seq + ' does not open with these keys');
    }
    // Padding: zeros after a delimiter, 2 in the last record, 1 before.
    let i = plain.length - 1;
    while (i >= 0 && plain[i] === 0) i--;
    if (i < 0 || plain[i] !== (last ? 2 : 1)) throw fail('record ' + seq + ' has no valid padding delimiter');
    out.push(plain.subarray(0, i));
  }
  return concat(...out);
}
