// The console's calls: the same public API providers use (docs/protocol.md,
// "The console's API"), with the credential the user signed in with.
//
// Credentials live in sessionStorage, so they last as long as the tab and
// no longer, and travel only in the Authorization header: the admin token
// as a bearer token (acting for an app through the Herald-App header), or
// an app's key and master secret as HTTP Basic.

const KEY = 'herald-console';

// ApiError is an error answer: code is the catalogue's stable code.
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

let onUnauthorized = () => {};

// whenUnauthorized sets what happens when the server refuses the
// credential: the sign-in page, with the server's message.
export function whenUnauthorized(fn) { onUnauthorized = fn; }

// credential returns what the user signed in with, or null:
// {kind: 'admin', token} or {kind: 'app', appKey, secret}.
export function credential() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY));
  } catch (_) {
    return null;
  }
}

export function signIn(cred) { sessionStorage.setItem(KEY, JSON.stringify(cred)); }

export function signOut() { sessionStorage.removeItem(KEY); }

// headers returns the Authorization (and Herald-App) headers for a call
// about app (an app key, or '' for the node).
function headers(app) {
  const c = credential();
  const h = {};
  if (!c) return h;
  if (c.kind === 'admin') {
    h.Authorization = 'Bearer ' + c.token;
    if (app) h['Herald-App'] = app;
  } else {
    // btoa takes Latin-1 only; keys and secrets are base64url.
    h.Authorization = 'Basic ' + btoa(c.appKey + ':' + c.secret);
  }
  return h;
}

async function errorOf(resp) {
  try {
    const body = await resp.json();
    if (body && body.error) return new ApiError(resp.status, body.error.code, body.error.message);
  } catch (_) { /* not JSON */ }
  return new ApiError(resp.status, 'http_' + resp.status, resp.statusText || 'HTTP ' + resp.status);
}

// call makes one API call and returns its JSON answer (null for 204).
// opts: app (the app the call is about), body (sent as JSON).
export async function call(method, path, opts = {}) {
  const h = headers(opts.app);
  // 'omit': the credential is in the header, never a cookie, and a
  // browser asks no password of its own for a 401 to such a request
  // (Herald's 401 carries a Basic challenge, for curl and address bars).
  const init = { method, headers: h, cache: 'no-store', credentials: 'omit' };
  if (opts.body !== undefined) {
    h['Content-Type'] = 'application/json';
    init.body = JSON.stringify(opts.body);
  }
  const resp = await fetch(path, init);
  if (resp.status === 401) {
    const err = await errorOf(resp);
    onUnauthorized(err);
    throw err;
  }
  if (!resp.ok) throw await errorOf(resp);
  if (resp.status === 204) return null;
  return resp.json();
}

// q builds a query string from the set values of params.
export function q(params) {
  const s = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') s.set(k, v);
  const text = s.toString();
  return text ? '?' + text : '';
}

// stream reads GET /v1/stats/stream (for app, or the node when app is
// empty) with fetch, since EventSource cannot send an Authorization
// header, and hands each event to onEvent(name, data). It reconnects with
// back-off when the stream ends, until stop() is called.
export function stream(app, onEvent, onState = () => {}) {
  let stopped = false;
  let ctrl = null;
  let delay = 500;
  async function run() {
    while (!stopped) {
      ctrl = new AbortController();
      try {
        const resp = await fetch('/v1/stats/stream', { headers: headers(app), signal: ctrl.signal, cache: 'no-store', credentials: 'omit' });
        if (resp.status === 401) {
          onUnauthorized(await errorOf(resp));
          return;
        }
        if (!resp.ok) throw await errorOf(resp);
        onState('live');
        delay = 500;
        await readEvents(resp.body, onEvent);
      } catch (e) {
        if (stopped) return;
        onState('reconnecting');
      }
      if (stopped) return;
      await new Promise((r) => setTimeout(r, delay * (0.5 + Math.random() / 2)));
      delay = Math.min(delay * 2, 15000);
    }
  }
  run();
  return { stop() { stopped = true; if (ctrl) ctrl.abort(); } };
}

// readEvents parses a text/event-stream body: fields until a blank line
// make an event.
async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  let name = 'message';
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i).replace(/\r$/, '');
      buf = buf.slice(i + 1);
      if (line === '') {
        if (data.length) {
          try { onEvent(name, JSON.parse(data.join('\n'))); } catch (_) { /* a malformed event is skipped */ }
        }
        name = 'message';
        data = [];
      } else if (line.startsWith('event:')) {
        name = line.slice(6).trim();
      } else if (line.startsWith('data:')) {
        data.push(line.slice(5).replace(/^ /, ''));
      }
    }
  }
}
