// The designer: composes the document store, the run-event stream, shortcuts and the panels. State that belongs to
// one panel lives in that panel; what several share (the document, the selection, statuses) lives here.
import { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import { ReactFlow, ReactFlowProvider, Background, Controls, MiniMap, useReactFlow } from '@xyflow/react';
import { api, keyStore } from './api.js';
import { openText, saveText } from './jsonText.js';
import { locate, newId, toEdges } from './graph.js';
import { autoLayout } from './layout.js';
import { clone, edits, emptyDoc, useDocumentStore } from './store/documentStore.js';
import { useRunEvents } from './hooks/useRunEvents.js';
import { useShortcuts } from './hooks/useShortcuts.js';
import StepNode from './StepNode.jsx';
import Toolbar from './components/Toolbar.jsx';
import Palette from './components/Palette.jsx';
import Inspector from './components/Inspector.jsx';
import RunsTable from './components/RunsTable.jsx';
import Viewer from './components/Viewer.jsx';

const nodeTypes = { step: StepNode };

function Designer() {
  const flow = useReactFlow();
  const [{ doc, positions }, store] = useDocumentStore();
  const [activities, setActivities] = useState([]);
  const [saved, setSaved] = useState([]);
  const [name, setName] = useState('untitled');
  const [file, setFile] = useState(null); // the opened file's text, for exact round trips
  const [selected, setSelected] = useState(null);
  const [diagnostics, setDiagnostics] = useState([]);
  const [message, setMessage] = useState(null);
  const [apiKey, setApiKey] = useState(keyStore.get());
  const [runId, setRunId] = useState(null);
  const [view, setView] = useState('design'); // design | runs
  const [runs, setRuns] = useState([]);
  const [viewer, setViewer] = useState(null);
  const clipboard = useRef(null);

  const say = (text, kind = 'info') => setMessage({ text, kind, at: Date.now() });
  const { statuses, setStatuses, logs, setLogs } = useRunEvents(runId, (r) => say(`run ${r.id} ${r.status}`, r.status === 'succeeded' ? 'info' : 'error'));
  const byType = useMemo(() => Object.fromEntries(activities.map((a) => [a.type, a])), [activities]);
  const fit = () => setTimeout(() => flow.fitView({ maxZoom: 1 }), 50);
  // Every edit of the document: through the store (undo history), and stale problems cleared.
  const edit = useCallback((fn) => { store.edit(fn); setDiagnostics([]); }, [store]);

  useEffect(() => {
    api.activities().then(setActivities).catch((e) => say(`cannot load activities: ${e.message}`, 'error'));
    api.workflows().then(setSaved).catch(() => {});
  }, []);

  const invalidSteps = useMemo(() => new Set(diagnostics.map((d) => locate(d.jsonPath)?.step).filter((i) => i != null)), [diagnostics]);
  const nodes = useMemo(() => (doc.steps ?? []).map((step, i) => ({
    id: step.id, type: 'step', selected: step.id === selected,
    position: positions[step.id] ?? doc.layout?.[step.id] ?? { x: 40 + (i % 4) * 260, y: 40 + Math.floor(i / 4) * 180 },
    data: { step, descriptor: byType[step.activity], status: statuses[step.id], invalid: invalidSteps.has(i) },
  })), [doc, positions, byType, statuses, selected, invalidSteps]);
  const edges = useMemo(() => toEdges(doc, byType), [doc, byType]);

  const load = (text, label) => {
    const f = openText(text);
    const d = f.originalDoc;
    setFile(f); setName(label); setSelected(null); setDiagnostics([]);
    store.load(d, d.layout ? {} : autoLayout(d)); // display only: nothing is written unless the user moves or lays out
    return d;
  };

  const open = async (which) => {
    try {
      load(await api.workflowText(which), which);
      setStatuses({});
      say(`opened ${which}`);
      fit();
    } catch (e) { say(e.message, 'error'); }
  };

  const newWorkflow = () => { setFile(null); setName('untitled'); edit(() => ({ doc: emptyDoc(), positions: {} })); setStatuses({}); };
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

  const watch = (id) => {
    setLogs([]);
    setStatuses(Object.fromEntries((doc.steps ?? []).map((s) => [s.id, { status: 'queued' }])));
    setRunId(id);
    say(`run ${id} started`);
  };

  const run = async () => {
    if (!(await validate())) return;
    try {
      watch((await api.submit(JSON.parse(text()), {})).runId);
    } catch (e) {
      if (e.body?.diagnostics) setDiagnostics(e.body.diagnostics);
      say(e.message, 'error');
    }
  };

  const onDrop = (event) => {
    event.preventDefault();
    const type = event.dataTransfer.getData('application/pipelines-activity');
    if (!type) return;
    const id = newId(doc, type);
    edit(edits.addStep(id, type, flow.screenToFlowPosition({ x: event.clientX, y: event.clientY })));
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
    edit(edits.connect(c.target, input.name, { from: `${c.source}.${c.sourceHandle}` }, input.type.isList));
  };

  const onNodesChange = (changes) => {
    const moved = changes.filter((c) => c.type === 'position' && c.position);
    if (moved.length) store.move(Object.fromEntries(moved.map((c) => [c.id, c.position])));
    const sel = changes.find((c) => c.type === 'select' && c.selected);
    if (sel) setSelected(sel.id);
  };

  const layoutAll = () => { edit(edits.layoutAll(autoLayout(doc))); fit(); };

  const renameStep = (stepId, id) => {
    if (!id || doc.steps.some((s) => s.id === id)) return;
    edit(edits.renameStep(stepId, id));
    setSelected(id);
  };

  useShortcuts({
    'mod+z': store.undo, 'mod+shift+z': store.redo, 'mod+y': store.redo,
    'mod+c': () => { if (selected) clipboard.current = clone(doc.steps.find((s) => s.id === selected)); },
    'mod+v': () => {
      if (!clipboard.current) return;
      const id = newId(doc, clipboard.current.id.replace(/\d+$/, ''));
      edit(edits.paste(clipboard.current, id));
      setSelected(id);
    },
  });

  const showRuns = async () => { setView('runs'); setRuns(await api.runs()); };

  const openRun = async (id) => {
    const r = await api.run(id);
    load(r.workflowText, r.run.workflow);
    setStatuses(Object.fromEntries(r.steps.map((s) => [s.id, s])));
    setView('design');
    fit();
  };

  return (
    <div className="app">
      <Toolbar saved={saved} name={name} onName={setName} apiKey={apiKey} onApiKey={(k) => { setApiKey(k); keyStore.set(k); }} view={view}
        on={{ open, newWorkflow, save, validate, run, layout: layoutAll, undo: store.undo, redo: store.redo, design: () => setView('design'), runs: showRuns }} />
      {message && <div data-testid="message" className={`message ${message.kind}`}>{message.text}</div>}
      <div className="body">
        <Palette activities={activities} />
        <main onDrop={onDrop} onDragOver={(e) => { e.preventDefault(); e.dataTransfer.dropEffect = 'move'; }}>
          {view === 'runs' ? (
            <RunsTable runs={runs} onOpen={openRun}
              onRerun={async (id) => watch((await api.rerun(id)).runId)} onReproduce={async (id) => watch((await api.reproduce(id)).runId)} />
          ) : (
            <ReactFlow nodes={nodes} edges={edges} nodeTypes={nodeTypes} onConnect={onConnect} onNodesChange={onNodesChange} onNodeClick={(_, n) => setSelected(n.id)}
              onNodeDragStop={(_, node) => edit(edits.place(node.id, node.position))}
              onEdgesDelete={(removed) => edit(edits.deleteEdges(removed))}
              onNodesDelete={(removed) => { edit(edits.deleteSteps(new Set(removed.map((n) => n.id)))); setSelected(null); }}
              onPaneClick={() => setSelected(null)} deleteKeyCode={['Delete', 'Backspace']} defaultViewport={{ x: 0, y: 0, zoom: 0.8 }} maxZoom={1.5}>
              <Background />
              <Controls />
              <MiniMap pannable zoomable />
            </ReactFlow>
          )}
        </main>
        <Inspector doc={doc} selected={selected} byType={byType} diagnostics={diagnostics} statuses={statuses}
          onRename={renameStep} onSetInput={(stepId, port, v) => edit(edits.setInput(stepId, port, v))} onView={setViewer} />
      </div>
      <footer data-testid="logs">
        {runId && <div className="runline">run {runId}</div>}
        {logs.slice(-200).map((l, k) => <div key={k}>{l}</div>)}
      </footer>
      {viewer && <Viewer artifact={viewer} onClose={() => setViewer(null)} />}
    </div>
  );
}

export default function App() {
  return <ReactFlowProvider><Designer /></ReactFlowProvider>;
}
