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

const TRANSPORTS = ['ws', 'sse', 'poll'];

// Close codes and SSE close events after which reconnecting with the same
// credentials cannot help.
const FATAL_WS = { 4001: 'unauthorized', 4004: 'device_deleted', 4008: 'replaced' };

function storageKey(server, appKey) {
  return `herald:${server}:${appKey}`;
}

function trimServer(server) {
  return String(server || location.origin).replace(/\/+$/, '');
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
// opts.storage is given). opts: appKey (required), platform ('web'), alias,
// tags, fresh (true: drop a kept registration and create a new one).
export async function register(server, opts = {}) {
  server = trimServer(server);
  const { appKey, platform = 'web', alias, tags, fresh = false } = opts;
  if (!appKey) throw new HeraldError('bad_app_key', 'register needs opts.appKey');
  const storage = opts.storage || globalThis.localStorage;
  const key = storageKey(server, appKey);
  if (!fresh && storage) {
    try {
      const kept = JSON.parse(storage.getItem(key) || 'null');
      if (kept && kept.registration_id && kept.device_secret) return kept;
    } catch (_) { /* a broken entry: register again */ }
  }
  const body = { app_key: appKey, platform };
  if (alias) body.alias = alias;
  if (tags && tags.length) body.tags = tags;
  const resp = await fetch(server + '/v1/devices', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (!resp.ok) throw await errorOf(resp);
  const d = await resp.json();
  const reg = {
    server, app_key: appKey, registration_id: d.registration_id, device_secret: d.device_secret,
    platform: d.platform, alias: d.alias, tags: d.tags,
  };
  if (storage) storage.setItem(key, JSON.stringify(reg));
  return reg;
}

// forget drops the kept registration, for example after the server said the
// device was deleted; the next register creates a new one.
export function forget(reg, storage = globalThis.localStorage) {
  if (storage) storage.removeItem(storageKey(reg.server, reg.app_key));
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
//   onStatus(s)       {state: 'connecting'|'open'|'waiting'|'stopped', transport}
//   onError(err)      a HeraldError after which the client stopped (the
//                     registration is unknown or deleted, or replaced)
//   transports        which to try, in order; default ['ws', 'sse', 'poll']
//   minDelay, maxDelay  back-off bounds in ms (500, 30000)
// It returns {close(), transport}.
export function connect(reg, opts = {}) {
  const server = trimServer(reg.server);
  const transports = (opts.transports || TRANSPORTS).filter((t) => TRANSPORTS.includes(t));
  const minDelay = opts.minDelay ?? 500;
  const maxDelay = opts.maxDelay ?? 30000;
  const onMessage = opts.onMessage || (() => {});
  const onStatus = opts.onStatus || (() => {});
  const onError = opts.onError || ((e) => console.error('herald:', e));
  const seen = new Recent(1024);
  const authHeader = 'Basic ' + btoa(reg.registration_id + ':' + reg.device_secret);
  const query = 'registration_id=' + encodeURIComponent(reg.registration_id) +
    '&device_secret=' + encodeURIComponent(reg.device_secret);

  let index = 0; // the transport in use, in transports
  let everOpen = false; // the current transport has worked at least once
  let failures = 0; // consecutive failures, for back-off and fallback
  let stopped = false;
  let current = null; // {close()} of the open attempt
  let timer = null;
  let chain = Promise.resolve(); // onMessage calls, one after another
  let lastEventId = ''; // SSE resume point

  const handle = {
    close() { stop(null); },
    get transport() { return transports[index]; },
  };

  function status(state) { onStatus({ state, transport: transports[index] }); }

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

  // failed: the attempt ended; reconnect, maybe on the next transport.
  function failed() {
    current = null;
    if (stopped) return;
    failures++;
    if (!everOpen && failures >= 2 && index < transports.length - 1) {
      index++; // this transport does not get through here: try the next now
      failures = 0;
      start();
      return;
    }
    status('waiting');
    timer = setTimeout(start, backoff(failures - 1, minDelay, maxDelay));
  }

  // deliver runs onMessage for m unless it is a duplicate, then acks it
  // with ack(ids). Duplicates are acked again: the first ack may be lost.
  function deliver(m, ack) {
    chain = chain.then(async () => {
      if (stopped) return;
      if (!seen.has(m.id)) {
        try {
          await onMessage(m);
        } catch (e) {
          console.error('herald: onMessage failed; the message comes again later', e);
          return;
        }
        seen.add(m.id);
      }
      ack([m.id]);
    });
  }

  // postAck gathers the IDs acked in one turn of the event loop into one
  // POST /v1/inbox/ack; flushed is the promise of the last one.
  let ackIDs = [];
  let flushed = Promise.resolve();
  function postAck(ids) {
    if (ackIDs.length === 0) {
      flushed = new Promise((resolve) => setTimeout(resolve, 0)).then(async () => {
        const batch = ackIDs;
        ackIDs = [];
        try {
          await fetch(server + '/v1/inbox/ack', {
            method: 'POST',
            headers: { 'Content-Type': 'application/json', Authorization: authHeader },
            body: JSON.stringify({ ids: batch }),
          });
        } catch (_) { /* not acked: the message comes again, and is dropped as a duplicate */ }
      });
    }
    ackIDs.push(...ids);
  }

  // probe asks the server whether the credentials still hold, after a
  // transport failed in a way that hides the status (EventSource).
  async function probe() {
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
    const url = server.replace(/^http/, 'ws') + '/v1/inbox/ws?' + query;
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
        const e = await probe();
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
