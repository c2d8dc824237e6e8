// The live figures: one stream (GET /v1/stats/stream) per page, whose
// events drive the chart and whatever else on the page follows them. The
// page never polls: it changes when the server sends something.

import { stream } from './api.js';
import { LiveChart } from './chart.js';
import { h, replace, badge } from './dom.js';

// watch opens the stream for app (the node when empty) for as long as the
// page is on screen, and returns {on(fn), state(fn), changed(fn)}: fn(event)
// for each stats event, state(s) for 'live' or 'reconnecting', and
// changed(fn) for a page that reads its data again: fn() at the first event
// (for what moved before it) and whenever the pushes or deliveries totals
// move; a failed fn() waits for the next change.
export function watch(ctx, app) {
  const fns = [];
  const states = [];
  const s = stream(app, (name, ev) => {
    if (name === 'stats') for (const fn of fns) fn(ev);
  }, (st) => { for (const fn of states) fn(st); });
  ctx.onLeave(() => s.stop());
  const w = {
    on(fn) { fns.push(fn); },
    state(fn) { states.push(fn); },
    changed(fn, key = (ev) => ev.totals.pushes + '/' + ev.totals.delivered) {
      let last = null;
      w.on(async (ev) => {
        const sig = key(ev);
        if (sig === last) return;
        last = sig;
        try { await fn(); } catch (_) { /* the next change tries again */ }
      });
    },
  };
  return w;
}

const SERIES = [
  { name: 'connections', color: '#7c3aed' },
  { name: 'pushes/s', color: '#2563eb', dash: [6, 4] },
  { name: 'deliveries/s', color: '#15803d' },
];

// liveCard is a card with the live chart of w's events.
export function liveCard(w, title) {
  const canvas = h('canvas', { class: 'chart', id: 'live-chart' });
  const chart = new LiveChart(canvas, SERIES);
  const state = h('span', { id: 'live-state' }, badge('connecting', 'reconnecting'));
  const now = h('span', { class: 'split', id: 'live-now' });
  w.state((st) => replace(state, badge(st, st)));
  w.on((ev) => {
    const conns = Object.values(ev.connections || {}).reduce((a, b) => a + b, 0);
    chart.add(new Date(ev.at), [conns, ev.pushes_per_s, ev.delivered_per_s]);
    replace(now,
      h('span', {}, h('b', { id: 'live-connections' }, conns), conns === 1 ? ' connection' : ' connections'),
      h('span', {}, h('b', {}, ev.pushes_per_s.toFixed(1)), ' pushes/s'),
      h('span', {}, h('b', {}, ev.delivered_per_s.toFixed(1)), ' deliveries/s'),
      ev.sent_per_s !== undefined ? h('span', {}, h('b', {}, ev.sent_per_s.toFixed(1)), ' sent/s') : null,
      h('span', {}, 'since start: ', h('b', { id: 'live-pushes-total' }, ev.totals.pushes), ' pushes, ',
        h('b', { id: 'live-delivered-total' }, ev.totals.delivered), ' delivered'));
  });
  return h('div', { class: 'card', id: 'live' },
    h('div', { class: 'head' }, h('h2', {}, title + ' — live'), state),
    h('div', { class: 'legend' }, SERIES.map((s) => h('span', {}, h('i', { style: { background: s.color } }), s.name))),
    canvas, now);
}
