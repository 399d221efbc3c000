// Past runs: open one on the canvas (a running one keeps updating), re-run it, reproduce it (recompute without the
// cache, then every digest compared with the original's), and compare the same output of two runs side by side.
import { useEffect, useMemo, useState } from 'react';
import { Columns2, RefreshCw, Repeat, ScanSearch } from 'lucide-react';
import { api } from '../api.js';
import { duration } from '../format.js';
import { ArtifactView } from './Viewer.jsx';

export default function RunsTable({ runs, onOpen, onRerun, onReproduce, onRefresh, reproduction }) {
  const [picked, setPicked] = useState([]);
  const [compare, setCompare] = useState(null);
  const toggle = (id) => setPicked((p) => (p.includes(id) ? p.filter((x) => x !== id) : [...p, id].slice(-2)));
  const startCompare = async () => {
    const [a, b] = await Promise.all(picked.map((id) => api.run(id)));
    setCompare({ a, b });
  };
  return (
    <div className="runs" data-testid="runs-list">
      <div className="runs-head">
        <h3>Runs</h3>
        <button onClick={onRefresh} data-testid="runs-refresh"><RefreshCw size={13} /> Refresh</button>
        <button disabled={picked.length !== 2} onClick={startCompare} data-testid="compare"><Columns2 size={13} /> Compare {picked.length}/2</button>
      </div>
      {reproduction && <Reproduction result={reproduction} />}
      <table>
        <thead><tr><th /><th>run</th><th>workflow</th><th>kind</th><th>status</th><th>started</th><th>took</th><th>parameters</th><th /></tr></thead>
        <tbody>
          {runs.map((r) => (
            <tr key={r.id}>
              <td><input type="checkbox" aria-label={`pick ${r.id}`} data-testid={`pick-${r.id}`} checked={picked.includes(r.id)} onChange={() => toggle(r.id)} /></td>
              <td><a href={`?run=${r.id}`} onClick={(e) => { e.preventDefault(); onOpen(r.id); }} data-testid={`run-${r.id}`}>{r.id}</a></td>
              <td>{r.workflow}</td>
              <td>{r.kind}{r.origin ? ` of ${r.origin}` : ''}</td>
              <td><span className={`pill s-${r.status}`}>{r.status}</span></td>
              <td>{new Date(r.startedAt).toLocaleString()}</td>
              <td>{r.endedAt ? duration(new Date(r.endedAt) - new Date(r.startedAt)) : ''}</td>
              <td className="params">{Object.entries(r.parameters ?? {}).map(([k, v]) => `${k}=${v}`).join(' ')}</td>
              <td className="actions">
                <button onClick={() => onRerun(r.id)} data-testid={`rerun-${r.id}`} title="Run again (cached steps are reused)"><Repeat size={13} /> Re-run</button>
                <button onClick={() => onReproduce(r.id)} data-testid={`reproduce-${r.id}`} title="Recompute without the cache and compare every digest"><ScanSearch size={13} /> Reproduce</button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {compare && <Compare {...compare} onClose={() => setCompare(null)} />}
    </div>
  );
}

/** A finished reproduction: every digest equal, or which outputs differ. */
function Reproduction({ result }) {
  const differ = (result.reproduction ?? []).filter((r) => !r.match);
  return (
    <div className={`reproduction ${differ.length ? 'bad' : 'good'}`} data-testid="reproduction">
      {result.run.status !== 'succeeded' ? `reproduction ${result.run.id} ${result.run.status}${result.run.error ? `: ${result.run.error}` : ''}`
        : differ.length === 0 ? `reproduced run ${result.run.origin}: all ${result.reproduction.length} output digests equal (run ${result.run.id})`
          : `run ${result.run.id}: ${differ.length} of ${result.reproduction.length} outputs differ from run ${result.run.origin}`}
      {differ.length > 0 && (
        <ul>{differ.map((r) => <li key={`${r.step}.${r.output}`}><code>{r.step}.{r.output ?? ''}</code> {r.original?.slice(0, 12) ?? '—'} → {r.reproduced?.slice(0, 12) ?? r.status}</li>)}</ul>
      )}
    </div>
  );
}

/** The same output of two runs, side by side. */
function Compare({ a, b, onClose }) {
  const outputsOf = (r) => Object.fromEntries(r.steps.flatMap((s) => Object.entries(s.outputs ?? {}).map(([port, o]) => [`${s.id}.${port}`, { ...o, port, stepId: s.id }])));
  const left = useMemo(() => outputsOf(a), [a]);
  const right = useMemo(() => outputsOf(b), [b]);
  const common = Object.keys(left).filter((k) => right[k]);
  const [which, setWhich] = useState(common[0] ?? '');
  useEffect(() => { if (!common.includes(which)) setWhich(common[0] ?? ''); }, [a, b]); // eslint-disable-line react-hooks/exhaustive-deps
  return (
    <div className="compare" data-testid="compare-view">
      <div className="runs-head">
        <h3>Compare</h3>
        <select value={which} onChange={(e) => setWhich(e.target.value)} data-testid="compare-output">
          {common.map((k) => <option key={k} value={k}>{k}{left[k].digest === right[k].digest ? ' (identical)' : ''}</option>)}
        </select>
        <button onClick={onClose}>Close</button>
      </div>
      {common.length === 0 ? <div className="hint">These runs share no output.</div> : (
        <div className="compare-panes">
          {[[a, left], [b, right]].map(([r, outs], k) => (
            <div key={k} className="pane" data-testid={`compare-${k === 0 ? 'left' : 'right'}`}>
              <h4>run {r.run.id} <small>{r.run.workflow} · {outs[which].digest.slice(0, 12)}</small></h4>
              <ArtifactView key={`${r.run.id}-${which}`} artifact={outs[which]} />
            </div>
          ))}
        </div>
      )}
    </div>
  );
}
