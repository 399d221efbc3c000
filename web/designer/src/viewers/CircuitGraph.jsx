// A circuit (MIB's JSON graph: nodes and scored edges) as an interactive layered graph: input at the left, each
// layer's heads then its MLP, logits at the right. Edge width follows |score|, colour its sign; hovering an edge
// shows its score, hovering a node highlights its edges. A graph with in_graph flags shows the circuit's edges; one
// without (every edge scored) shows the strongest N, adjustable.
import { useMemo, useState } from 'react';
import { num } from '../format.js';

function place(name) {
  if (name === 'input') return { col: 0, row: 0 };
  if (name === 'logits') return { col: Infinity, row: 0 };
  let m = /^a(\d+)\.h(\d+)$/.exec(name);
  if (m) return { col: 1 + 2 * Number(m[1]), row: Number(m[2]) };
  m = /^m(\d+)$/.exec(name);
  if (m) return { col: 2 + 2 * Number(m[1]), row: 0 };
  return { col: 0.5, row: 0 };
}
const base = (n) => n.replace(/<[qkv]>$/, '');

export function edgeList(graph) {
  return Object.entries(graph.edges ?? {}).map(([key, e]) => {
    const [src, dst] = key.split('->');
    return { key, src, dst: base(dst), qkv: (/<([qkv])>$/.exec(dst) ?? [])[1], score: e.score, inGraph: e.in_graph };
  });
}

export default function CircuitGraph({ graph }) {
  const all = useMemo(() => edgeList(graph), [graph]);
  const hasFlags = all.some((e) => e.inGraph);
  const [top, setTop] = useState(Math.min(60, all.length));
  const [hover, setHover] = useState(null);
  const [focus, setFocus] = useState(null);
  const edges = useMemo(() => (hasFlags ? all.filter((e) => e.inGraph) : [...all].sort((a, b) => Math.abs(b.score) - Math.abs(a.score)).slice(0, top)), [all, hasFlags, top]);
  const layout = useMemo(() => {
    const names = Object.keys(graph.nodes ?? {});
    for (const e of all) { if (!names.includes(e.src)) names.push(e.src); if (!names.includes(e.dst)) names.push(e.dst); }
    const placed = names.map((n) => ({ name: n, ...place(n) }));
    const finite = placed.filter((p) => Number.isFinite(p.col)).map((p) => p.col);
    const last = Math.max(0, ...finite) + 1;
    for (const p of placed) if (!Number.isFinite(p.col)) p.col = last;
    const rows = Math.max(1, ...placed.map((p) => p.row + 1));
    const at = {};
    for (const p of placed) at[p.name] = { x: 60 + p.col * 110, y: 40 + (p.row + 0.5) * (360 / rows) + (p.name.startsWith('m') ? 0 : 0) };
    return { at, width: 60 + last * 110 + 80, height: 420, inGraph: new Set(names.filter((n) => graph.nodes?.[n]?.in_graph !== false)) };
  }, [graph, all]);
  const maxScore = Math.max(1e-12, ...edges.map((e) => Math.abs(e.score)));
  return (
    <div className="circuit" data-testid="circuit-graph">
      <div className="filters">
        <span data-testid="circuit-count">{edges.length} of {all.length} edges {hasFlags ? 'in the circuit' : 'by |score|'}</span>
        {!hasFlags && <label>top <input type="range" min={1} max={Math.min(400, all.length)} value={top} onChange={(e) => setTop(Number(e.target.value))} /> {top}</label>}
        <span className="legend-inline"><i style={{ background: '#d62728' }} /> positive <i style={{ background: '#1f77b4' }} /> negative</span>
      </div>
      <div style={{ position: 'relative', overflow: 'auto' }}>
        <svg width={layout.width} height={layout.height}>
          {edges.map((e) => {
            const a = layout.at[e.src], b = layout.at[e.dst];
            if (!a || !b) return null;
            const dim = focus && e.src !== focus && e.dst !== focus;
            const mid = (a.x + b.x) / 2;
            return (
              <path key={e.key} d={`M${a.x},${a.y} C${mid},${a.y} ${mid},${b.y} ${b.x},${b.y}`} fill="none" className="circuit-edge" data-testid="circuit-edge"
                data-score={e.score} stroke={e.score >= 0 ? '#d62728' : '#1f77b4'} strokeOpacity={dim ? 0.08 : 0.75}
                strokeWidth={0.8 + 5 * Math.abs(e.score) / maxScore}
                onMouseEnter={(ev) => setHover({ e, x: ev.nativeEvent.offsetX, y: ev.nativeEvent.offsetY })} onMouseLeave={() => setHover(null)} />
            );
          })}
          {Object.entries(layout.at).map(([name, p]) => (
            <g key={name} transform={`translate(${p.x},${p.y})`} onMouseEnter={() => setFocus(name)} onMouseLeave={() => setFocus(null)} data-testid={`circuit-node-${name}`}>
              <rect x={-26} y={-11} width={52} height={22} rx={5} className={layout.inGraph.has(name) ? 'cnode in' : 'cnode out'} />
              <text textAnchor="middle" dy={4}>{name}</text>
            </g>
          ))}
        </svg>
        {hover && (
          <div className="tooltip" data-testid="circuit-tooltip" style={{ left: hover.x + 14, top: hover.y + 14 }}>
            {hover.e.src} → {hover.e.dst}{hover.e.qkv ? ` (${hover.e.qkv})` : ''}<br />score <strong>{num(hover.e.score)}</strong>
          </div>
        )}
      </div>
    </div>
  );
}
