import { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import { ReactFlow, ReactFlowProvider, Background, Controls, MiniMap, useReactFlow } from '@xyflow/react';
import dagre from '@dagrejs/dagre';
import { api, keyStore } from './api.js';
import { openText, saveText } from './jsonText.js';
import { artifactInputs, colorOf, locate, newId, refs, toEdges, valueInputs } from './graph.js';
import StepNode from './StepNode.jsx';

const nodeTypes = { step: StepNode };
const clone = (v) => JSON.parse(JSON.stringify(v));
const emptyDoc = () => ({ $schema: './workflow.schema.json', name: 'untitled', steps: [] });

function autoLayout(doc) {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: 'LR', nodesep: 40, ranksep: 90 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const s of doc.steps ?? []) g.setNode(s.id, { width: 220, height: 110 });
  for (const s of doc.steps ?? []) {
    for (const v of Object.values(s.inputs ?? {})) for (const [from] of refs(v)) if (g.hasNode(from)) g.setEdge(from, s.id);
  }
  dagre.layout(g);
  const positions = {};
  for (const s of doc.steps ?? []) { const n = g.node(s.id); positions[s.id] = { x: Math.round(n.x - 110), y: Math.round(n.y - 55) }; }
  return positions;
}

function Designer() {
  const flow = useReactFlow();
  const [activities, setActivities] = useState([]);
  const [search, setSearch] = useState('');
  const [saved, setSaved] = useState([]);
  const [name, setName] = useState('untitled');
  const [file, setFile] = useState(null); // the opened file's text, for exact round trips
  const [doc, setDoc] = useState(emptyDoc);
  const [positions, setPositions] = useState({});
  const [selected, setSelected] = useState(null);
  const [diagnostics, setDiagnostics] = useState([]);
  const [statuses, setStatuses] = useState({});
  const [logs, setLogs] = useState([]);
  const [message, setMessage] = useState(null);
  const [key, setKey] = useState(keyStore.get());
  const [runId, setRunId] = useState(null);
  const [view, setView] = useState('design'); // design | runs
  const [runs, setRuns] = useState([]);
  const [viewer, setViewer] = useState(null);
  const history = useRef({ past: [], future: [] });
  const clipboard = useRef(null);

  const byType = useMemo(() => Object.fromEntries(activities.map((a) => [a.type, a])), [activities]);
  const say = (text, kind = 'info') => setMessage({ text, kind, at: Date.now() });

  useEffect(() => {
    api.activities().then(setActivities).catch((e) => say(`cannot load activities: ${e.message}`, 'error'));
    api.workflows().then(setSaved).catch(() => {});
  }, []);

  // Every change goes through here: undo history, then the new document (and positions).
  const change = useCallback((next, nextPositions) => {
    history.current.past.push({ doc, positions });
    history.current.future = [];
    setDoc(next);
    if (nextPositions) setPositions(nextPositions);
    setDiagnostics([]);
  }, [doc, positions]);

  const undo = () => {
    const prev = history.current.past.pop();
    if (!prev) return;
    history.current.future.push({ doc, positions });
    setDoc(prev.doc); setPositions(prev.positions);
  };
  const redo = () => {
    const next = history.current.future.pop();
    if (!next) return;
    history.current.past.push({ doc, positions });
    setDoc(next.doc); setPositions(next.positions);
  };

  const invalidSteps = useMemo(() => new Set(diagnostics.map((d) => locate(d.jsonPath)?.step).filter((i) => i != null)), [diagnostics]);
  const nodes = useMemo(() => (doc.steps ?? []).map((step, i) => ({
    id: step.id, type: 'step', selected: step.id === selected,
    position: positions[step.id] ?? doc.layout?.[step.id] ?? { x: 40 + (i % 4) * 260, y: 40 + Math.floor(i / 4) * 180 },
    data: { step, descriptor: byType[step.activity], status: statuses[step.id], invalid: invalidSteps.has(i) },
  })), [doc, positions, byType, statuses, selected, invalidSteps]);
  const edges = useMemo(() => toEdges(doc, byType), [doc, byType]);

  const open = async (which) => {
    try {
      const text = await api.workflowText(which);
      const f = openText(text);
      const d = f.originalDoc;
      setFile(f); setName(which); setDoc(d); setStatuses({}); setSelected(null); setDiagnostics([]);
      setPositions(d.layout ? {} : autoLayout(d)); // display only: nothing is written unless the user moves or lays out
      history.current = { past: [], future: [] };
      say(`opened ${which}`);
      setTimeout(() => flow.fitView({ maxZoom: 1 }), 50);
    } catch (e) { say(e.message, 'error'); }
  };

  const newWorkflow = () => { setFile(null); setName('untitled'); change(emptyDoc(), {}); setStatuses({}); };

  const text = () => saveText(file, doc);

  const save = async () => {
    try {
      const t = text();
      const result = await api.saveWorkflow(name, t);
      setDiagnostics(result.diagnostics ?? []);
      setFile(openText(t));
      api.workflows().then(setSaved).catch(() => {});
      say(result.valid ? `saved ${name}` : `saved ${name}, with ${result.diagnostics.length} problem(s)`, result.valid ? 'info' : 'warn');
    } catch (e) { say(e.message, 'error'); }
  };

  const validate = async () => {
    try {
      const r = await api.validate(text());
      setDiagnostics(r.diagnostics);
      say(r.valid ? 'valid' : `${r.diagnostics.length} problem(s)`, r.valid ? 'info' : 'warn');
      return r.valid;
    } catch (e) { say(e.message, 'error'); return false; }
  };

  const run = async () => {
    if (!(await validate())) return;
    try {
      const { runId: id } = await api.submit(JSON.parse(text()), {});
      watch(id);
    } catch (e) {
      if (e.body?.diagnostics) setDiagnostics(e.body.diagnostics);
      say(e.message, 'error');
    }
  };

  const watch = (id) => {
    setRunId(id); setLogs([]);
    setStatuses(Object.fromEntries((doc.steps ?? []).map((s) => [s.id, { status: 'queued' }])));
    say(`run ${id} started`);
    const source = new EventSource(`/api/runs/${id}/events`);
    source.addEventListener('step', (ev) => {
      const s = JSON.parse(ev.data);
      setStatuses((old) => ({ ...old, [s.id]: { ...old[s.id], status: s.status, error: s.error, durationMs: s.durationMs, outputs: s.outputs, cachedFrom: s.cachedFrom } }));
      setLogs((l) => [...l, `${s.id}: ${s.status}${s.error ? ` — ${s.error}` : ''}`]);
    });
    source.addEventListener('progress', (ev) => {
      const e = JSON.parse(ev.data);
      setStatuses((old) => ({ ...old, [e.stepId]: { ...old[e.stepId], status: 'running', progress: e.data.fraction } }));
    });
    source.addEventListener('log', (ev) => { const e = JSON.parse(ev.data); setLogs((l) => [...l, `${e.stepId}: ${e.data.message}`]); });
    source.addEventListener('run', (ev) => {
      const r = JSON.parse(ev.data);
      setLogs((l) => [...l, `run ${r.id}: ${r.status}${r.error ? ` — ${r.error}` : ''}`]);
      say(`run ${r.id} ${r.status}`, r.status === 'succeeded' ? 'info' : 'error');
      source.close();
    });
    source.onerror = () => source.close();
  };

  const onDrop = (event) => {
    event.preventDefault();
    const type = event.dataTransfer.getData('application/pipelines-activity');
    if (!type) return;
    const position = flow.screenToFlowPosition({ x: event.clientX, y: event.clientY });
    const id = newId(doc, type);
    const next = clone(doc);
    next.steps = [...(next.steps ?? []), { id, activity: type, inputs: {} }];
    next.layout = { ...(next.layout ?? {}), [id]: { x: Math.round(position.x), y: Math.round(position.y) } };
    change(next, { ...positions, [id]: position });
    setSelected(id);
  };

  const onConnect = (c) => {
    const source = doc.steps.find((s) => s.id === c.source);
    const target = doc.steps.find((s) => s.id === c.target);
    const out = byType[source.activity]?.outputs.find((o) => o.name === c.sourceHandle);
    const input = byType[target.activity]?.inputs.find((i) => i.name === c.targetHandle);
    if (!out || !input) return;
    if (out.kind !== input.type.artifactKind) {
      say(`refused: ${c.source}.${out.name} is a ${out.kind}, but ${c.target}.${input.name} takes a ${input.type.artifactKind}`, 'error');
      return;
    }
    const next = clone(doc);
    const step = next.steps.find((s) => s.id === c.target);
    step.inputs ??= {};
    const reference = { from: `${c.source}.${c.sourceHandle}` };
    step.inputs[input.name] = input.type.isList ? [...(Array.isArray(step.inputs[input.name]) ? step.inputs[input.name] : []), reference] : reference;
    change(next);
  };

  const onEdgesDelete = (removed) => {
    const next = clone(doc);
    for (const e of removed) {
      const step = next.steps.find((s) => s.id === e.target);
      const v = step?.inputs?.[e.targetHandle];
      if (Array.isArray(v)) {
        step.inputs[e.targetHandle] = v.filter((r) => r.from !== `${e.source}.${e.sourceHandle}`);
      } else if (step) {
        delete step.inputs[e.targetHandle];
      }
    }
    change(next);
  };

  const onNodesDelete = (removed) => {
    const ids = new Set(removed.map((n) => n.id));
    const next = clone(doc);
    next.steps = next.steps.filter((s) => !ids.has(s.id));
    for (const s of next.steps) {
      for (const [port, v] of Object.entries(s.inputs ?? {})) {
        if (refs(v).some(([from]) => ids.has(from))) delete s.inputs[port];
      }
    }
    if (next.layout) for (const id of ids) delete next.layout[id];
    change(next);
    setSelected(null);
  };

  const onNodeDragStop = (_, node) => {
    const next = clone(doc);
    next.layout = { ...(next.layout ?? {}), [node.id]: { x: Math.round(node.position.x), y: Math.round(node.position.y) } };
    change(next, { ...positions, [node.id]: node.position });
  };

  const onNodesChange = (changes) => {
    const moved = changes.filter((c) => c.type === 'position' && c.position);
    if (moved.length) setPositions((p) => ({ ...p, ...Object.fromEntries(moved.map((c) => [c.id, c.position])) }));
    const sel = changes.find((c) => c.type === 'select' && c.selected);
    if (sel) setSelected(sel.id);
  };

  const layoutAll = () => {
    const p = autoLayout(doc);
    const next = clone(doc);
    next.layout = p;
    change(next, p);
    setTimeout(() => flow.fitView({ maxZoom: 1 }), 50);
  };

  const setInput = (stepId, port, value) => {
    const next = clone(doc);
    const step = next.steps.find((s) => s.id === stepId);
    step.inputs ??= {};
    if (value === undefined) delete step.inputs[port]; else step.inputs[port] = value;
    change(next);
  };

  const renameStep = (stepId, id) => {
    if (!id || doc.steps.some((s) => s.id === id)) return;
    const next = clone(doc);
    for (const s of next.steps) {
      if (s.id === stepId) s.id = id;
      for (const [port, v] of Object.entries(s.inputs ?? {})) {
        const fix = (r) => (r && typeof r === 'object' && typeof r.from === 'string' && r.from.startsWith(`${stepId}.`) ? { ...r, from: `${id}.${r.from.slice(stepId.length + 1)}` } : r);
        s.inputs[port] = Array.isArray(v) ? v.map(fix) : fix(v);
      }
    }
    if (next.layout?.[stepId]) { next.layout[id] = next.layout[stepId]; delete next.layout[stepId]; }
    change(next, { ...positions, [id]: positions[stepId] });
    setSelected(id);
  };

  useEffect(() => {
    const onKey = (e) => {
      if (e.target.closest('input, textarea, select')) return;
      const mod = e.ctrlKey || e.metaKey;
      if (mod && e.key.toLowerCase() === 'z') { e.preventDefault(); if (e.shiftKey) redo(); else undo(); }
      if (mod && e.key.toLowerCase() === 'y') { e.preventDefault(); redo(); }
      if (mod && e.key.toLowerCase() === 'c' && selected) clipboard.current = clone(doc.steps.find((s) => s.id === selected));
      if (mod && e.key.toLowerCase() === 'v' && clipboard.current) {
        const copy = clone(clipboard.current);
        copy.id = newId(doc, copy.id.replace(/\d+$/, ''));
        const base = positions[clipboard.current.id] ?? { x: 0, y: 0 };
        const next = clone(doc);
        next.steps.push(copy);
        next.layout = { ...(next.layout ?? {}), [copy.id]: { x: base.x + 40, y: base.y + 40 } };
        change(next, { ...positions, [copy.id]: { x: base.x + 40, y: base.y + 40 } });
        setSelected(copy.id);
      }
    };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  });

  const showRuns = async () => { setView('runs'); setRuns(await api.runs()); };

  const openRun = async (id) => {
    const r = await api.run(id);
    const d = JSON.parse(r.workflowText);
    setFile(openText(r.workflowText)); setDoc(d); setName(r.run.workflow);
    setPositions(d.layout ? {} : autoLayout(d));
    setStatuses(Object.fromEntries(r.steps.map((s) => [s.id, s])));
    setRunId(id); setView('design');
    setTimeout(() => flow.fitView({ maxZoom: 1 }), 50);
  };

  const step = doc.steps?.find((s) => s.id === selected);
  const descriptor = step && byType[step.activity];
  const stepIndex = doc.steps?.findIndex((s) => s.id === selected);
  const fieldErrors = diagnostics.map((d) => ({ ...d, at: locate(d.jsonPath) })).filter((d) => d.at && d.at.step === stepIndex);
  const status = step && statuses[step.id];

  const categories = useMemo(() => {
    const q = search.trim().toLowerCase();
    const groups = {};
    for (const a of activities) {
      if (q && !`${a.type} ${a.summary} ${a.category}`.toLowerCase().includes(q)) continue;
      (groups[a.category] ??= []).push(a);
    }
    return Object.entries(groups).sort(([a], [b]) => a.localeCompare(b));
  }, [activities, search]);

  return (
    <div className="app">
      <header>
        <strong>Pipelines</strong>
        <select data-testid="open" value="" onChange={(e) => e.target.value && open(e.target.value)}>
          <option value="">Open…</option>
          {saved.map((w) => <option key={w.name} value={w.name}>{w.name}</option>)}
        </select>
        <button onClick={newWorkflow}>New</button>
        <input data-testid="name" className="name" value={name} onChange={(e) => setName(e.target.value)} title="Saved as workflows/NAME.json" />
        <button data-testid="save" onClick={save}>Save</button>
        <button data-testid="validate" onClick={validate}>Validate</button>
        <button data-testid="run" onClick={run}>Run</button>
        <button onClick={layoutAll} data-testid="layout">Auto-layout</button>
        <button onClick={undo} data-testid="undo" title="Ctrl+Z">Undo</button>
        <button onClick={redo} data-testid="redo" title="Ctrl+Shift+Z">Redo</button>
        <button onClick={view === 'runs' ? () => setView('design') : showRuns} data-testid="runs">{view === 'runs' ? 'Designer' : 'Runs'}</button>
        <input data-testid="key" type="password" placeholder="API key" value={key} onChange={(e) => { setKey(e.target.value); keyStore.set(e.target.value); }} />
        <a href="/hangfire" target="_blank" rel="noreferrer">Jobs</a>
      </header>
      {message && <div data-testid="message" className={`message ${message.kind}`}>{message.text}</div>}
      <div className="body">
        <aside className="palette">
          <input data-testid="search" placeholder="Search activities" value={search} onChange={(e) => setSearch(e.target.value)} />
          {categories.map(([category, list]) => (
            <div key={category} className="category">
              <h4>{category}</h4>
              {list.map((a) => (
                <div key={a.type} className="activity" draggable data-testid={`palette-${a.type}`} title={a.summary}
                  onDragStart={(e) => { e.dataTransfer.setData('application/pipelines-activity', a.type); e.dataTransfer.effectAllowed = 'move'; }}>
                  {a.type}
                </div>
              ))}
            </div>
          ))}
        </aside>
        <main onDrop={onDrop} onDragOver={(e) => { e.preventDefault(); e.dataTransfer.dropEffect = 'move'; }}>
          {view === 'runs' ? (
            <div className="runs" data-testid="runs-list">
              <h3>Runs</h3>
              <table>
                <thead><tr><th>run</th><th>workflow</th><th>status</th><th>started</th><th /></tr></thead>
                <tbody>
                  {runs.map((r) => (
                    <tr key={r.id}>
                      <td><a href="#" onClick={(e) => { e.preventDefault(); openRun(r.id); }} data-testid={`run-${r.id}`}>{r.id}</a></td>
                      <td>{r.workflow}</td><td className={`s-${r.status}`}>{r.status}</td><td>{new Date(r.startedAt).toLocaleString()}</td>
                      <td>
                        <button onClick={async () => watch((await api.rerun(r.id)).runId)}>Re-run</button>
                        <button onClick={async () => watch((await api.reproduce(r.id)).runId)}>Reproduce</button>
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          ) : (
            <ReactFlow nodes={nodes} edges={edges} nodeTypes={nodeTypes} onConnect={onConnect} onNodesChange={onNodesChange} onNodeClick={(_, n) => setSelected(n.id)}
              onNodeDragStop={onNodeDragStop} onEdgesDelete={onEdgesDelete} onNodesDelete={onNodesDelete}
              onPaneClick={() => setSelected(null)} deleteKeyCode={['Delete', 'Backspace']} defaultViewport={{ x: 0, y: 0, zoom: 0.8 }} maxZoom={1.5}>
              <Background />
              <Controls />
              <MiniMap pannable zoomable />
            </ReactFlow>
          )}
        </main>
        <aside className="panel" data-testid="panel">
          {step && descriptor ? (
            <>
              <h3>
                <input data-testid="step-id" defaultValue={step.id} key={step.id} onBlur={(e) => renameStep(step.id, e.target.value.trim())} />
              </h3>
              <div className="summary">{descriptor.type} v{descriptor.version}: {descriptor.summary}</div>
              {fieldErrors.filter((d) => !d.at.input).map((d, k) => <div key={k} className="field-error">{d.message}</div>)}
              {artifactInputs(descriptor).map((p) => (
                <div key={p.name} className="field">
                  <label style={{ borderLeft: `4px solid ${colorOf(p.type.artifactKind)}` }}>{p.name} <em>{p.type.artifactKind}{p.type.isList ? '[]' : ''}{p.required ? ' · required' : ''}</em></label>
                  <div className="connected">{refs(step.inputs?.[p.name]).map(([s, o]) => `${s}.${o}`).join(', ') || 'not connected'}</div>
                  {fieldErrors.filter((d) => d.at.input === p.name).map((d, k) => <div key={k} className="field-error" data-testid={`error-${p.name}`}>{d.message}</div>)}
                </div>
              ))}
              {valueInputs(descriptor).map((p) => (
                <Field key={`${step.id}-${p.name}`} port={p} value={step.inputs?.[p.name]} errors={fieldErrors.filter((d) => d.at.input === p.name)}
                  onChange={(v) => setInput(step.id, p.name, v)} />
              ))}
              {status && <Outputs status={status} onView={setViewer} />}
            </>
          ) : (
            <div className="hint">Drag activities from the left onto the canvas, connect outputs to inputs of the same colour, and select a step to edit its inputs.</div>
          )}
          {diagnostics.length > 0 && (
            <div className="diagnostics" data-testid="diagnostics">
              <h4>Problems</h4>
              {diagnostics.map((d, k) => <div key={k}><code>{d.jsonPath}</code> {d.message}</div>)}
            </div>
          )}
        </aside>
      </div>
      <footer data-testid="logs">
        {runId && <div className="runline">run {runId}</div>}
        {logs.slice(-200).map((l, k) => <div key={k}>{l}</div>)}
      </footer>
      {viewer && <Viewer artifact={viewer} onClose={() => setViewer(null)} />}
    </div>
  );
}

/** One value input, generated from its descriptor: type, default, constraints and help. */
function Field({ port, value, errors, onChange: set }) {
  const t = port.type.value;
  // Only real changes reach the document (and the undo history).
  const onChange = (v) => { if (JSON.stringify(v) !== JSON.stringify(value)) set(v); };
  const isRef = value && typeof value === 'object' && !Array.isArray(value) && ('param' in value || 'from' in value);
  const help = <div className="help">{port.help}</div>;
  let control;
  if (isRef) {
    control = <input disabled value={JSON.stringify(value)} />;
  } else if (port.allowedValues?.length) {
    control = (
      <select data-testid={`field-${port.name}`} value={value ?? ''} onChange={(e) => onChange(e.target.value === '' ? undefined : e.target.value)}>
        <option value="">{`default: ${port.default ?? '—'}`}</option>
        {port.allowedValues.map((a) => <option key={a} value={a}>{a}</option>)}
      </select>
    );
  } else if (t === 'boolean') {
    control = <input type="checkbox" data-testid={`field-${port.name}`} checked={value ?? port.default ?? false} onChange={(e) => onChange(e.target.checked)} />;
  } else if (t === 'json' || port.type.isList) {
    control = <textarea data-testid={`field-${port.name}`} defaultValue={value === undefined ? '' : JSON.stringify(value)} placeholder={JSON.stringify(port.default ?? null)}
      onBlur={(e) => { try { onChange(e.target.value.trim() ? JSON.parse(e.target.value) : undefined); } catch { /* keep */ } }} />;
  } else {
    const numeric = t === 'integer' || t === 'number';
    control = <input data-testid={`field-${port.name}`} type={numeric ? 'number' : 'text'} defaultValue={value ?? ''} placeholder={port.default == null ? '' : String(port.default)}
      onBlur={(e) => { const s = e.target.value; onChange(s === '' ? undefined : numeric ? Number(s) : s); }} />;
  }
  return (
    <div className="field">
      <label>{port.name} <em>{t}{port.required ? ' · required' : ''}{port.minimum != null ? ` ≥ ${port.minimum}` : ''}{port.maximum != null ? ` ≤ ${port.maximum}` : ''}</em></label>
      {control}
      {help}
      {errors.map((d, k) => <div key={k} className="field-error" data-testid={`error-${port.name}`}>{d.message}</div>)}
    </div>
  );
}

function Outputs({ status, onView }) {
  return (
    <div className="outputs" data-testid="outputs">
      <h4>Status: {status.status}{status.cachedFrom ? ` (from run ${status.cachedFrom})` : ''}</h4>
      {status.error && <div className="field-error">{status.error}</div>}
      {Object.entries(status.outputs ?? {}).map(([port, o]) => (
        <div key={port}>
          <button data-testid={`view-${port}`} onClick={() => onView({ port, ...o })}>View {port}</button> <small>{o.mediaType} · {o.size} B</small>
        </div>
      ))}
    </div>
  );
}

/** The artifact viewer: reports and plots inline, JSON pretty-printed, directories as file lists. */
function Viewer({ artifact, onClose }) {
  const [text, setText] = useState(null);
  const url = `/api/artifacts/${artifact.digest}`;
  const kind = artifact.isDirectory ? 'dir' : artifact.mediaType.startsWith('image/') ? 'image' : artifact.mediaType === 'text/html' ? 'html' : 'text';
  useEffect(() => {
    if (kind === 'text') api.artifactText(artifact.digest).then((t) => { try { setText(JSON.stringify(JSON.parse(t), null, 2)); } catch { setText(t); } });
    if (kind === 'dir') api.artifact(artifact.digest).then((d) => setText(d.files));
  }, [artifact.digest, kind]);
  return (
    <div className="viewer" data-testid="viewer">
      <div className="viewer-bar"><strong>{artifact.port}</strong> <small>{artifact.kind} · {artifact.mediaType}</small> <a href={url} target="_blank" rel="noreferrer">open</a> <button onClick={onClose}>Close</button></div>
      {kind === 'image' && <img src={url} alt={artifact.port} />}
      {kind === 'html' && <iframe title={artifact.port} src={url} data-testid="report-frame" />}
      {kind === 'text' && <pre>{text}</pre>}
      {kind === 'dir' && <ul>{(text ?? []).map((f) => <li key={f}><a href={`${url}/${f}`} target="_blank" rel="noreferrer">{f}</a></li>)}</ul>}
    </div>
  );
}

export default function App() {
  return <ReactFlowProvider><Designer /></ReactFlowProvider>;
}
