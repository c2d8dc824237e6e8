// A small line chart on a canvas, redrawn when a point arrives (the live
// stream sends one a second); nothing here runs on a timer.
//
//   const c = new LiveChart(canvas, [{ name: 'pushes/s', color: '#2563eb' }]);
//   c.add(new Date(), [3]);

export class LiveChart {
  // series: [{name, color}]; span: how many points are kept and shown.
  constructor(canvas, series, span = 120) {
    this.canvas = canvas;
    this.series = series;
    this.span = span;
    this.points = []; // [{t: Date, v: [number...]}], oldest first
  }

  add(t, values) {
    this.points.push({ t, v: values });
    if (this.points.length > this.span) this.points.shift();
    this.draw();
  }

  draw() {
    const c = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const w = c.clientWidth;
    const h = c.clientHeight;
    if (!w || !h) return;
    if (c.width !== Math.round(w * ratio) || c.height !== Math.round(h * ratio)) {
      c.width = Math.round(w * ratio);
      c.height = Math.round(h * ratio);
    }
    const g = c.getContext('2d');
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, w, h);
    const pad = { l: 44, r: 10, t: 10, b: 22 };
    const pw = w - pad.l - pad.r;
    const ph = h - pad.t - pad.b;
    let top = 0;
    for (const p of this.points) for (const v of p.v) top = Math.max(top, v);
    top = niceCeiling(top);

    g.font = '11px system-ui, sans-serif';
    g.textBaseline = 'middle';
    g.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = pad.t + ph - (ph * i) / 4;
      g.strokeStyle = i === 0 ? '#c8ccd2' : '#eceef1';
      g.beginPath();
      g.moveTo(pad.l, Math.round(y) + 0.5);
      g.lineTo(pad.l + pw, Math.round(y) + 0.5);
      g.stroke();
      g.fillStyle = '#6b7280';
      g.textAlign = 'right';
      g.fillText(fmt((top * i) / 4), pad.l - 6, y);
    }
    g.textAlign = 'left';
    g.fillText(`last ${this.span} s`, pad.l, h - 8);
    if (this.points.length) {
      g.textAlign = 'right';
      g.fillText(this.points[this.points.length - 1].t.toLocaleTimeString(), pad.l + pw, h - 8);
    }
    const x = (i) => pad.l + pw - ((this.points.length - 1 - i) * pw) / (this.span - 1);
    const y = (v) => pad.t + ph - (top ? (v / top) * ph : 0);
    // The first series is drawn last, on top; a series may be dashed
    // ({dash: [5, 4]}) to show through another with the same values.
    [...this.series.entries()].reverse().forEach(([k, s]) => {
      g.strokeStyle = s.color;
      g.lineWidth = 2;
      g.lineJoin = 'round';
      g.setLineDash(s.dash || []);
      g.beginPath();
      this.points.forEach((p, i) => {
        const px = x(i);
        const py = y(p.v[k] || 0);
        if (i === 0) g.moveTo(px, py);
        else g.lineTo(px, py);
      });
      g.stroke();
    });
    g.setLineDash([]);
  }
}

// niceCeiling is the top of an axis of four steps above v, each 1, 2 or
// 5 times a power of ten and at least 1, so that the axis reads in round
// whole numbers.
function niceCeiling(v) {
  const step = v / 4;
  if (step <= 1) return 4;
  const p = Math.pow(10, Math.floor(Math.log10(step)));
  for (const m of [1, 2, 5, 10]) if (step <= m * p) return 4 * m * p;
  return 40 * p;
}

function fmt(v) {
  if (v >= 1000) return (v / 1000).toFixed(v >= 10000 ? 0 : 1) + 'k';
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}
