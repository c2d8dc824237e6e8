// Small DOM helpers. Text always goes in as text nodes, never as HTML, so
// that nothing a device or a provider wrote can run in the console.

// h builds an element: h('a', {href: '#/x', class: 'y'}, 'text', child).
// Attributes starting with "on" are listeners; null and false children
// and attributes are left out.
export function h(tag, attrs = {}, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    // Through the CSSOM: the console's Content-Security-Policy refuses
    // style attributes.
    else if (k === 'style') Object.assign(el.style, v);
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, kids);
  return el;
}

function append(el, kids) {
  for (const k of kids.flat(Infinity)) {
    if (k === null || k === undefined || k === false) continue;
    el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
}

// replace puts kids in el instead of what it held.
export function replace(el, ...kids) {
  el.replaceChildren();
  append(el, kids);
  return el;
}

export function time(t) {
  if (!t || t.startsWith('0001-')) return '–';
  return new Date(t).toLocaleString();
}

// ago says how long ago t was, roughly.
export function ago(t) {
  const s = Math.round((Date.now() - new Date(t).getTime()) / 1000);
  if (s < 0) return 'in ' + span(-s);
  return span(s) + ' ago';
}

function span(s) {
  if (s < 60) return s + ' s';
  if (s < 3600) return Math.round(s / 60) + ' min';
  if (s < 86400) return Math.round(s / 3600) + ' h';
  return Math.round(s / 86400) + ' d';
}

export function badge(text, kind = text) {
  return h('span', { class: 'badge ' + kind }, text);
}

export function note(text, kind = '') {
  return h('div', { class: 'note ' + kind, role: kind === 'bad' ? 'alert' : null }, text);
}

// summary describes an audience as the push named it.
export function audienceText(a, platforms) {
  let s;
  if (a === 'all') s = 'everyone';
  else {
    const parts = [];
    if (a.registration_id) parts.push(plural(a.registration_id.length, 'device'));
    if (a.alias) parts.push('alias ' + a.alias.join(', '));
    if (a.tag) parts.push('tag ' + a.tag.join(' or '));
    if (a.tag_and) parts.push('tags ' + a.tag_and.join(' and '));
    if (a.tag_not) parts.push('not ' + a.tag_not.join(', '));
    s = parts.join('; ') || '–';
  }
  if (platforms && platforms.length) s += ' (' + platforms.join(', ') + ')';
  return s;
}

export function plural(n, word) {
  return n + ' ' + word + (n === 1 ? '' : 's');
}

// contentText is a line saying what a message carried.
export function contentText(m) {
  const n = m.notification;
  if (n && (n.title || n.body)) return [n.title, n.body].filter(Boolean).join(' — ');
  if (m.message !== undefined) {
    const s = JSON.stringify(m.message);
    return 'message ' + (s.length > 60 ? s.slice(0, 57) + '…' : s);
  }
  return '(empty notification)';
}
