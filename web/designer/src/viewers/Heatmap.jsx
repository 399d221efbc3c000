// A heatmap of a matrix (rows × columns) on a canvas, so large matrices stay fast; hovering a cell shows its row,
// column and value. Signed data get a diverging scale centred on zero, non-negative data a sequential one.
// Used for edge scores (forward × backward nodes), and for any JSON artifact in the `pipelines.heatmap/1` format:
// {"format": "pipelines.heatmap/1", "title", "rows": [...], "columns": [...], "values": [[...]], "valueLabel"}
// (patching, IIA and erasure matrices).
import { useEffect, useMemo, useRef, useState } from 'react';
import { num } from '../format.js';

function color(v, max, signed) {
  if (v == null || Number.isNaN(v)) return '#eee';
  const t = max === 0 ? 0 : Math.min(1, Math.abs(v) / max);
  if (signed) {
    const [r, g, b] = v >= 0 ? [214, 39, 40] : [31, 119, 180];
    return `rgb(${Math.round(255 + (r - 255) * t)},${Math.round(255 + (g - 255) * t)},${Math.round(255 + (b - 255) * t)})`;
  }
  return `rgb(${Math.round(255 - 200 * t)},${Math.round(255 - 150 * t)},${Math.round(255 - 40 * t)})`;
}

export default function Heatmap({ rows, columns, values, title, valueLabel = 'value' }) {
  const canvas = useRef(null);
  const [hover, setHover] = useState(null);
  const { max, signed } = useMemo(() => {
    let m = 0, neg = false;
    for (const row of values) for (const v of row) { if (v != null && !Number.isNaN(v)) { m = Math.max(m, Math.abs(v)); if (v < 0) neg = true; } }
    return { max: m, signed: neg };
  }, [values]);
  const cellW = Math.max(4, Math.min(28, Math.floor(900 / Math.max(1, columns.length))));
  const cellH = Math.max(4, Math.min(22, Math.floor(520 / Math.max(1, rows.length))));
  useEffect(() => {
    const c = canvas.current;
    if (!c) return;
    const ctx = c.getContext('2d');
    for (let i = 0; i < rows.length; i++) {
      for (let j = 0; j < columns.length; j++) { ctx.fillStyle = color(values[i]?.[j], max, signed); ctx.fillRect(j * cellW, i * cellH, cellW, cellH); }
    }
  }, [rows, columns, values, max, signed, cellW, cellH]);
  const onMove = (e) => {
    const box = e.currentTarget.getBoundingClientRect();
    const j = Math.floor((e.clientX - box.left) / cellW), i = Math.floor((e.clientY - box.top) / cellH);
    if (i < 0 || j < 0 || i >= rows.length || j >= columns.length) { setHover(null); return; }
    setHover({ i, j, x: e.clientX - box.left, y: e.clientY - box.top });
  };
  const labelRows = cellH >= 10, labelColumns = cellW >= 10;
  return (
    <div className="heatmap" data-testid="heatmap">
      {title && <h4>{title}</h4>}
      <div className="heatmap-grid">
        {labelRows && <div className="row-labels">{rows.map((r) => <div key={r} style={{ height: cellH }}>{r}</div>)}</div>}
        <div className="heatmap-plot">
          {labelColumns && <div className="column-labels" style={{ width: columns.length * cellW }}>{columns.map((c) => <div key={c} style={{ width: cellW }}><span>{c}</span></div>)}</div>}
          <div style={{ position: 'relative' }}>
            <canvas ref={canvas} width={columns.length * cellW} height={rows.length * cellH} onMouseMove={onMove} onMouseLeave={() => setHover(null)} data-testid="heatmap-canvas" />
            {hover && (
              <div className="tooltip" data-testid="heatmap-tooltip" style={{ left: hover.x + 12, top: hover.y + 12 }}>
                {rows[hover.i]} → {columns[hover.j]}<br />{valueLabel}: <strong>{num(values[hover.i]?.[hover.j])}</strong>
              </div>
            )}
          </div>
        </div>
      </div>
      <div className="scale">
        <span>{signed ? num(-max) : 0}</span>
        <div className="bar" style={{ background: `linear-gradient(to right, ${signed ? `${color(-max, max, true)}, #fff, ` : '#fff, '}${color(max, max, signed)})` }} />
        <span>{num(max)}</span> <small>{valueLabel}</small>
      </div>
    </div>
  );
}

/** Reads a safetensors file's first tensor as {shape, data} (F32, F64, F16, BF16). */
export function readSafetensors(buffer) {
  const view = new DataView(buffer);
  const headerLength = Number(view.getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 8, headerLength)));
  const name = Object.keys(header).find((k) => k !== '__metadata__');
  const { dtype, shape, data_offsets: [start, end] } = header[name];
  const base = 8 + headerLength + start, n = shape.reduce((a, b) => a * b, 1);
  const out = new Float64Array(n);
  const bytes = { F32: 4, F64: 8, F16: 2, BF16: 2 }[dtype];
  if (!bytes || (end - start) !== n * bytes) throw new Error(`unsupported tensor ${name}: ${dtype} ${JSON.stringify(shape)}`);
  for (let k = 0; k < n; k++) {
    const at = base + k * bytes;
    if (dtype === 'F32') out[k] = view.getFloat32(at, true);
    else if (dtype === 'F64') out[k] = view.getFloat64(at, true);
    else if (dtype === 'BF16') { const b = new DataView(new ArrayBuffer(4)); b.setUint16(2, view.getUint16(at, true)); out[k] = b.getFloat32(0); }
    else { const h = view.getUint16(at, true), e = (h >> 10) & 31, f = h & 1023, s = h >> 15 ? -1 : 1; out[k] = e === 0 ? s * 2 ** -14 * (f / 1024) : e === 31 ? (f ? NaN : s * Infinity) : s * 2 ** (e - 15) * (1 + f / 1024); }
  }
  return { name, shape, data: out };
}
