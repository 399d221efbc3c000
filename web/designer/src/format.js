// How numbers and times read to people: durations, elapsed clocks, values in summaries.

/** 950 ms, 1.2 s, 2 min 05 s, 1 h 02 min. */
export function duration(ms) {
  if (ms == null || Number.isNaN(ms)) return '';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(Math.floor(s % 60)).padStart(2, '0')} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`;
}

/** A clock since a start time: 0:07, 1:02:03. */
export function clock(since, now = Date.now()) {
  if (!since) return '';
  const t = Math.max(0, Math.floor((now - new Date(since).getTime()) / 1000));
  const h = Math.floor(t / 3600), m = Math.floor((t % 3600) / 60), s = t % 60;
  return h ? `${h}:${String(m).padStart(2, '0')}:${String(s).padStart(2, '0')}` : `${m}:${String(s).padStart(2, '0')}`;
}

/** A value as a short summary on a node: numbers as given, strings clipped, references by name. */
export function short(v) {
  if (v && typeof v === 'object' && !Array.isArray(v) && 'param' in v) return `$${v.param}`;
  const text = typeof v === 'string' ? v : JSON.stringify(v);
  return text.length > 18 ? `${text.slice(0, 17)}…` : text;
}

/** A number for a table or a tooltip: 4 significant digits. */
export function num(x) {
  if (typeof x !== 'number') return String(x ?? '');
  if (Number.isInteger(x)) return String(x);
  const a = Math.abs(x);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? x.toExponential(3) : Number(x.toPrecision(4)).toString();
}
