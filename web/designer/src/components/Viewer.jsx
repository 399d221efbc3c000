// The artifact viewer, in the page: each kind of result gets its own view. Datasets and topics as tables, circuits as
// an interactive graph (or their edge-score matrix), scores as a heatmap, heatmap JSON as a heatmap, images and figure
// sets as a grid, erasure matrices as a methods × probes heatmap, reports inline, other JSON pretty-printed, directories as file lists; every view has a download link.
import { useEffect, useState } from 'react';
import { Download, ExternalLink } from 'lucide-react';
import { api, artifactBytes, parseJsonl } from '../api.js';
import Dialog from './Dialog.jsx';
import Table, { columnsOf } from '../viewers/Table.jsx';
import TopicsTable from '../viewers/TopicsTable.jsx';
import Heatmap, { readSafetensors } from '../viewers/Heatmap.jsx';
import CircuitGraph, { edgeList } from '../viewers/CircuitGraph.jsx';
import ImageGrid from '../viewers/ImageGrid.jsx';

const imageFile = (f) => /\.(png|svg|jpe?g|gif|webp)$/i.test(f);

/** What view an artifact gets, from its kind and media type. */
export function viewOf(a) {
  if (a.figures) return 'figures';
  if (a.isDirectory) return a.kind === 'Scores' ? 'scores' : 'dir';
  if (a.mediaType?.startsWith('image/')) return 'image';
  if (a.mediaType === 'text/html') return 'html';
  if (a.kind === 'Topics') return 'topics';
  if (a.mediaType === 'application/x-ndjson') return 'table';
  if (a.kind === 'Circuit') return 'circuit';
  return 'text';
}

function matrixOfCircuit(graph) {
  const edges = edgeList(graph);
  const rows = [...new Set(edges.map((e) => e.src))];
  const columns = [...new Set(edges.map((e) => e.dst + (e.qkv ? `<${e.qkv}>` : '')))];
  const values = rows.map(() => columns.map(() => null));
  for (const e of edges) values[rows.indexOf(e.src)][columns.indexOf(e.dst + (e.qkv ? `<${e.qkv}>` : ''))] = e.score;
  return { rows, columns, values };
}

/** An erasure matrix as a heatmap: methods (with their verdicts) down, probes across, normalised scores. */
export function heatmapOfErasure(m) {
  const probes = [...new Set(m.methods.flatMap((r) => r.probes.map((p) => p.probe)))];
  return {
    rows: m.methods.map((r) => `${r.method} (${r.classification})`),
    columns: probes,
    values: m.methods.map((r) => probes.map((p) => r.probes.find((x) => x.probe === p)?.normalised ?? null)),
    title: `Erasure of ${m.concept}: scores normalised to [chance, B]`,
    valueLabel: 'normalised',
  };
}

/** A patching grid as a heatmap: layers down (last on top), positions across, normalised values. */
export function heatmapOfPatching(g) {
  const order = g.layers.map((_, i) => i).reverse();
  return {
    rows: order.map((i) => `L${g.layers[i]}`),
    columns: g.positions,
    values: order.map((i) => g.values[i]),
    title: `${g.direction} ${g.hook}: normalised ${g.metric} (1 = clean, 0 = corrupted)`,
    valueLabel: 'normalised',
  };
}

/** The view itself, without the dialog: the comparison shows two of them side by side. */
export function ArtifactView({ artifact }) {
  const [state, setState] = useState({ loading: true });
  const [circuitAs, setCircuitAs] = useState('graph');
  const view = viewOf(artifact);
  const url = `/api/artifacts/${artifact.digest}`;
  useEffect(() => {
    let live = true;
    const done = (s) => { if (live) setState(s); };
    const fail = (e) => done({ error: e.message });
    setState({ loading: true });
    if (view === 'table' || view === 'topics') api.artifactText(artifact.digest).then((t) => done(parseJsonl(t))).catch(fail);
    else if (view === 'circuit') api.artifactText(artifact.digest).then((t) => done({ graph: JSON.parse(t) })).catch(fail);
    else if (view === 'text') {
      api.artifactText(artifact.digest).then((t) => {
        let json = null;
        try { json = JSON.parse(t); } catch { /* text */ }
        if (json?.format === 'pipelines.heatmap/1') done({ heatmap: json });
        else if (json?.format === 'pipelines.erasure-matrix/1') done({ heatmap: heatmapOfErasure(json) });
        else if (json?.format === 'pipelines.patching-grid/1') done({ heatmap: heatmapOfPatching(json) });
        else done({ text: json ? JSON.stringify(json, null, 2) : t });
      }).catch(fail);
    } else if (view === 'scores') {
      Promise.all([api.artifactText(artifact.digest, 'index.json'), artifactBytes(artifact.digest, 'scores.safetensors')]).then(([index, bytes]) => {
        const meta = JSON.parse(index);
        const t = readSafetensors(bytes);
        const [n, m] = t.shape;
        const values = Array.from({ length: n }, (_, i) => Array.from(t.data.subarray(i * m, (i + 1) * m)));
        done({ heatmap: { rows: meta.forward ?? values.map((_, i) => String(i)), columns: meta.backward ?? values[0].map((_, j) => String(j)), values, title: 'Edge scores: upstream (rows) × downstream (columns)', valueLabel: 'score' } });
      }).catch(fail);
    } else if (view === 'dir') api.artifact(artifact.digest).then((d) => done({ files: d.files })).catch(fail);
    else done({});
    return () => { live = false; };
  }, [artifact.digest, view]);

  if (state.error) return <div className="field-error" data-testid="viewer-error">{state.error}</div>;
  if (state.loading) return <div className="hint">Loading…</div>;
  switch (view) {
    case 'figures': return <ImageGrid items={artifact.figures.map((f) => ({ src: `/api/artifacts/${f.digest}`, caption: `${f.port} · ${f.fileName ?? ''}` }))} />;
    case 'image': return <img className="artifact-image" src={url} alt={artifact.port} />;
    case 'html': return <iframe title={artifact.port} src={url} data-testid="report-frame" />;
    case 'table': return <>{state.cut && <div className="hint">showing the first {state.rows.length.toLocaleString()} rows</div>}<Table rows={state.rows} columns={columnsOf(state.rows)} testId="dataset-table" /></>;
    case 'topics': return <TopicsTable rows={state.rows} />;
    case 'circuit': return (
      <>
        <div className="tabs">
          <button className={circuitAs === 'graph' ? 'on' : ''} onClick={() => setCircuitAs('graph')} data-testid="circuit-as-graph">Graph</button>
          <button className={circuitAs === 'matrix' ? 'on' : ''} onClick={() => setCircuitAs('matrix')} data-testid="circuit-as-matrix">Matrix</button>
        </div>
        {circuitAs === 'graph' ? <CircuitGraph graph={state.graph} /> : <Heatmap {...matrixOfCircuit(state.graph)} title="Edge scores" valueLabel="score" />}
      </>
    );
    case 'scores': return <Heatmap {...state.heatmap} />;
    case 'dir': {
      const images = state.files.filter(imageFile);
      return (
        <>
          {images.length > 0 && <ImageGrid items={images.map((f) => ({ src: `${url}/${f}`, caption: f }))} />}
          <ul className="files">{state.files.map((f) => <li key={f}><a href={`${url}/${f}`} target="_blank" rel="noreferrer">{f}</a></li>)}</ul>
        </>
      );
    }
    default:
      return state.heatmap ? <Heatmap rows={state.heatmap.rows} columns={state.heatmap.columns} values={state.heatmap.values} title={state.heatmap.title} valueLabel={state.heatmap.valueLabel} />
        : <pre className="json">{state.text}</pre>;
  }
}

export default function Viewer({ artifact, onClose }) {
  const url = `/api/artifacts/${artifact.digest}`;
  return (
    <Dialog open onClose={onClose} wide testId="viewer"
      title={<>{artifact.stepId ? `${artifact.stepId}.` : ''}{artifact.figures ? 'figures' : artifact.port} <small>{artifact.figures ? `${artifact.figures.length} images` : `${artifact.kind} · ${artifact.mediaType}`}</small></>}>
      {!artifact.figures && (
        <div className="viewer-links">
          <a href={url} download data-testid="viewer-download"><Download size={13} /> download</a>
          {!artifact.isDirectory && <a href={url} target="_blank" rel="noreferrer"><ExternalLink size={13} /> open in a tab</a>}
          <code title="sha256">{artifact.digest.slice(0, 12)}</code>
        </div>
      )}
      <div className="viewer-body"><ArtifactView artifact={artifact} /></div>
    </Dialog>
  );
}
