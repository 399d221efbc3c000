// The designer: composes the document store, the run-event stream, shortcuts, the panels and the dialogs. State that
// belongs to one panel lives in that panel; what several share (the document, the selection, the watched run) lives
// here. The watched run's id is in the URL (?run=ID), so a reload or a shared link reattaches to it.
import { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import { ReactFlow, ReactFlowProvider, Background, Controls, MiniMap, useReactFlow } from '@xyflow/react';
import { api, keyStore } from './api.js';
import { openText, saveText } from './jsonText.js';
import { locate, newId, toEdges } from './graph.js';
import { autoLayout } from './layout.js';
import { categoryOf } from './icons.js';
import { clone, edits, emptyDoc, useDocumentStore } from './store/documentStore.js';
import { useRunEvents } from './hooks/useRunEvents.js';
import { shortcutList, useShortcuts } from './hooks/useShortcuts.js';
import StepNode from './StepNode.jsx';
import RoutedEdge from './edges/RoutedEdge.jsx';
import Toolbar from './components/Toolbar.jsx';
import Palette from './components/Palette.jsx';
import Inspector from './components/Inspector.jsx';
import RunsTable from './components/RunsTable.jsx';
import Viewer from './components/Viewer.jsx';
import RunDialog from './components/RunDialog.jsx';
import Dialog from './components/Dialog.jsx';
import Legend from './components/Legend.jsx';

const nodeTypes = { step: StepNode };
const edgeTypes = { routed: RoutedEdge };
const runInUrl = () => new URLSearchParams(window.location.search).get('run');
const setRunInUrl = (id) => window.history.replaceState(null, '', id ? `?run=${encodeURIComponent(id)}` : window.location.pathname);

function Designer() {
  const flow = useReactFlow();
  const [{ doc, positions }, store] = useDocumentStore();
  const [activities, setActivities] = useState([]);
  const [saved, setSaved] = useState([]);
  const [name, setName] = useState('untitled');
  const [file, setFile] = useState(null); // the opened file's text, for exact round trips and the unsaved-edits check
  const [selected, setSelected] = useState(null);
  const [diagnostics, setDiagnostics] = useState([]);
  const [message, setMessage] = useState(null);
  const [apiKey, setApiKey] = useState(keyStore.get());
  const [runId, setRunId] = useState(null);
  const [generation, setGeneration] = useState(0);
  const [busy, setBusy] = useState(false);
  const submitting = useRef(false);
  const [view, setView] = useState('design'); // design | runs
  const [runs, setRuns] = useState([]);
  const [viewer, setViewer] = useState(null);
  const [dialog, setDialog] = useState(null); // run | shortcuts | {confirm}
  const [connecting, setConnecting] = useState(null);
  const [sizes, setSizes] = useState({}); // measured node sizes: edges route around nodes, the minimap draws them
  const [reproduction, setReproduction] = useState(null);
  const [now, setNow] = useState(Date.now());
  const clipboard = useRef(null);
  const logBox = useRef(null);

  const say = useCallback((text, kind = 'info') => setMessage({ text, kind, at: Date.now() }), []);
  const refreshRuns = useCallback(() => api.runs().then(setRuns).catch((e) => say(`cannot list runs: ${e.message}`, 'error')), [say]);
  const onRunFinished = (r) => {
    say(`run ${r.id} ${r.status}${r.error ? `: ${r.error}` : ''}`, r.status === 'succeeded' ? 'info' : 'error');
    refreshRuns();
    if (r.kind === 'reproduce') {
      api.run(r.id).then((detail) => {
        setReproduction(detail);
        const differ = (detail.reproduction ?? []).filter((x) => !x.match).length;
        if (r.status === 'succeeded') say(differ ? `${differ} output(s) differ from run ${r.origin}` : `reproduced run ${r.origin}: every output digest is equal`, differ ? 'error' : 'info');
      }).catch((e) => say(e.message, 'error'));
    }
  };
  const { statuses, setStatuses, logs, setLogs, run, setRun, connection } = useRunEvents(runId, generation, onRunFinished);
  const byType = useMemo(() => Object.fromEntries(activities.map((a) => [a.type, a])), [activities]);
  const fit = () => setTimeout(() => flow.fitView({ maxZoom: 1, padding: 0.1 }), 60);
  // Every edit of the document: through the store (undo history), and stale problems cleared.
  const edit = useCallback((fn) => { store.edit(fn); setDiagnostics([]); }, [store]);
  const text = () => saveText(file, doc);
  const dirty = useMemo(() => (file ? saveText(file, doc) !== file.original : (doc.steps?.length ?? 0) > 0 || doc.parameters != null), [file, doc]);

  useEffect(() => {
    api.activities().then(setActivities).catch((e) => say(`cannot load activities: ${e.message}`, 'error'));
    api.workflows().then(setSaved).catch(() => {});
    const id = runInUrl();
    if (id) openRun(id); // eslint-disable-line no-use-before-define
  }, []); // eslint-disable-line react-hooks/exhaustive-deps

  // Info messages fade; problems stay until the next message.
  useEffect(() => {
    if (!message || message.kind === 'error') return undefined;
    const t = setTimeout(() => setMessage((m) => (m === message ? null : m)), 8000);
    return () => clearTimeout(t);
  }, [message]);

  // The clock ticks while something runs.
  const anyRunning = run?.status === 'running' || Object.values(statuses).some((s) => s.status === 'running');
  useEffect(() => {
    if (!anyRunning) return undefined;
    const t = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(t);
  }, [anyRunning]);

  // The log follows its newest line unless the reader scrolled up.
  useEffect(() => {
    const box = logBox.current;
    if (box && box.dataset.stuck !== 'false') box.scrollTop = box.scrollHeight;
  }, [logs]);

  // A reload or closing the tab with unsaved edits asks first.
  useEffect(() => {
    if (!dirty) return undefined;
    const warn = (e) => { e.preventDefault(); e.returnValue = ''; };
    window.addEventListener('beforeunload', warn);
    return () => window.removeEventListener('beforeunload', warn);
  }, [dirty]);

  /** Runs an action that replaces the document, asking first when there are unsaved edits. */
  const guard = (action, what) => { if (dirty) setDialog({ confirm: action, what }); else action(); };

  const invalidSteps = useMemo(() => new Set(diagnostics.map((d) => locate(d.jsonPath)?.step).filter((i) => i != null)), [diagnostics]);
  const nodes = useMemo(() => (doc.steps ?? []).map((step, i) => ({
    id: step.id, type: 'step', selected: step.id === selected, measured: sizes[step.id],
    position: positions[step.id] ?? doc.layout?.[step.id] ?? { x: 40 + (i % 4) * 260, y: 40 + Math.floor(i / 4) * 180 },
    data: { step, descriptor: byType[step.activity], status: statuses[step.id], invalid: invalidSteps.has(i), connecting, now },
  })), [doc, positions, byType, statuses, selected, invalidSteps, connecting, now, sizes]);
  const edges = useMemo(() => toEdges(doc, byType), [doc, byType]);

  /** Shows a workflow's text on a clean page: no statuses, logs, problems or messages of what was shown before. */
  const load = (workflowText, label) => {
    const f = openText(workflowText);
    const d = f.originalDoc;
    setFile(f); setName(label); setSelected(null); setDiagnostics([]); setMessage(null); setLogs([]); setStatuses({}); setReproduction(null);
    store.load(d, d.layout ? {} : autoLayout(d)); // display only: nothing is written unless the user moves or lays out
    return d;
  };

  const detach = () => { setRunId(null); setRun(null); setRunInUrl(null); };

  const open = (which) => guard(async () => {
    try {
      const t = await api.workflowText(which);
      detach();
      load(t, which);
      say(`opened ${which}`);
      fit();
    } catch (e) { say(e.message, 'error'); }
  }, `open ${which}`);

  const newWorkflow = () => guard(() => {
    detach();
    setFile(null); setName('untitled'); setSelected(null); setDiagnostics([]); setLogs([]); setStatuses({}); setMessage(null);
    store.load(emptyDoc(), {});
  }, 'start a new workflow');

  const save = async () => {
    const target = name.trim();
    if (!target) { say('name the workflow before saving', 'error'); return; }
    try {
      // The file's "name" follows the name it is saved under, so its runs list under that name.
      const named = doc.name === target ? doc : { ...doc, name: target };
      if (named !== doc) store.edit(edits.setName(target));
      const t = saveText(file, named);
      const result = await api.saveWorkflow(target, t);
      setDiagnostics(result.diagnostics ?? []);
      setFile(openText(t));
      api.workflows().then(setSaved).catch(() => {});
      say(result.valid ? `saved ${target}` : `saved ${target}, with ${result.diagnostics.length} problem(s)`, result.valid ? 'info' : 'warn');
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

  /** Watches a run: its id goes into the URL, and the event stream (re)attaches. */
  const watch = (id, status = 'running') => {
    setLogs([]);
    setRun({ id, status });
    setRunId(id);
    setGeneration((g) => g + 1);
    setRunInUrl(id);
  };

  const submit = async (parameters) => {
    if (submitting.current) return;
    submitting.current = true;
    setBusy(true);
    try {
      const { runId: id } = await api.submit(JSON.parse(text()), parameters);
      setDialog(null);
      setStatuses(Object.fromEntries((doc.steps ?? []).map((s) => [s.id, { status: 'queued' }])));
      watch(id);
      say(`run ${id} started`);
    } catch (e) {
      if (e.body?.diagnostics) setDiagnostics(e.body.diagnostics);
      say(e.body?.diagnostics?.length ? `${e.message}: ${e.body.diagnostics[0].jsonPath} ${e.body.diagnostics[0].message}` : e.message, 'error');
    } finally {
      submitting.current = false;
      setBusy(false);
    }
  };

  const cancel = async () => {
    try { await api.cancel(runId); say(`run ${runId} cancelled`); } catch (e) { say(e.message, 'error'); }
  };

  const resume = async () => {
    try {
      say(`resuming ${runId}: cancelled steps stop first`);
      await api.resume(runId);
      setRun((r) => ({ ...r, status: 'running', endedAt: null }));
      setGeneration((g) => g + 1);
      say(`run ${runId} resumed`);
    } catch (e) { say(e.message, 'error'); }
  };

  /** Opens a run (running or finished) on the canvas and attaches to its events. */
  const openRun = async (id, { stay = false } = {}) => {
    try {
      const r = await api.run(id);
      load(r.workflowText, r.run.workflow);
      setStatuses(Object.fromEntries(r.steps.map((s) => [s.id, s])));
      watch(id, r.run.status);
      setRun(r.run);
      if (r.reproduction) setReproduction(r);
      if (!stay) setView('design');
      fit();
    } catch (e) {
      say(e.status === 404 ? `no run ${id} on this server` : e.message, 'error');
      if (e.status === 404) setRunInUrl(null);
    }
  };

  const rerun = (id, how) => guard(async () => {
    try {
      const { runId: started } = await (how === 'reproduce' ? api.reproduce(id) : api.rerun(id));
      setReproduction(null);
      await openRun(started, { stay: true });
      say(how === 'reproduce' ? `reproducing ${id} as run ${started}: every step recomputed, then compared` : `re-running ${id} as run ${started}`);
      refreshRuns();
    } catch (e) { say(e.message, 'error'); }
  }, how === 'reproduce' ? `reproduce ${id}` : `re-run ${id}`);

  const onDrop = (event) => {
    event.preventDefault();
    const type = event.dataTransfer.getData('application/pipelines-activity');
    if (!type) return;
    const id = newId(doc, type);
    edit(edits.addStep(id, type, flow.screenToFlowPosition({ x: event.clientX, y: event.clientY })));
    setSelected(id);
  };

  const portKind = (nodeId, handleId, handleType) => {
    const step = doc.steps.find((s) => s.id === nodeId);
    const d = step && byType[step.activity];
    if (!d) return null;
    return handleType === 'source' ? d.outputs.find((o) => o.name === handleId)?.kind : d.inputs.find((i) => i.name === handleId)?.type.artifactKind;
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
    const measured = changes.filter((c) => c.type === 'dimensions' && c.dimensions);
    if (measured.length) {
      setSizes((old) => {
        const changed = measured.filter((c) => old[c.id]?.width !== c.dimensions.width || old[c.id]?.height !== c.dimensions.height);
        return changed.length ? { ...old, ...Object.fromEntries(changed.map((c) => [c.id, c.dimensions])) } : old;
      });
    }
    const sel = changes.find((c) => c.type === 'select' && c.selected);
    if (sel) setSelected(sel.id);
  };

  const layoutAll = () => { edit(edits.layoutAll(autoLayout(doc))); fit(); };

  const renameStep = (stepId, id) => {
    if (!id || id === stepId) return false;
    if (!/^[A-Za-z_][A-Za-z0-9_-]*$/.test(id)) { say(`refused: "${id}" is not a step id (a letter, then letters, digits, '-' or '_')`, 'error'); return false; }
    if (doc.steps.some((s) => s.id === id)) { say(`refused: a step named "${id}" exists; step ids are unique`, 'error'); return false; }
    edit(edits.renameStep(stepId, id));
    setSelected(id);
    return true;
  };

  const usage = useMemo(() => {
    const u = {};
    for (const s of doc.steps ?? []) for (const [port, v] of Object.entries(s.inputs ?? {})) if (v && typeof v === 'object' && v.param) (u[v.param] ??= []).push(`${s.id}.${port}`);
    return u;
  }, [doc]);

  useShortcuts({
    'mod+z': store.undo, 'mod+shift+z': store.redo, 'mod+y': store.redo,
    'mod+s': save, 'mod+enter': () => setDialog('run'), l: layoutAll, '?': () => setDialog('shortcuts'),
    'mod+c': () => { if (selected) clipboard.current = clone(doc.steps.find((s) => s.id === selected)); },
    'mod+v': () => {
      if (!clipboard.current) return;
      const id = newId(doc, clipboard.current.id.replace(/\d+$/, ''));
      edit(edits.paste(clipboard.current, id));
      setSelected(id);
    },
  });

  const showRuns = async () => { setView('runs'); refreshRuns(); };

  return (
    <div className="app">
      <Toolbar saved={saved} name={name} onName={setName} apiKey={apiKey} onApiKey={(k) => { setApiKey(k); keyStore.set(k); }} view={view}
        dirty={dirty} busy={busy} run={run} connection={connection} now={now}
        on={{
          open, newWorkflow, save, validate, run: () => setDialog('run'), cancel, resume, layout: layoutAll, undo: store.undo, redo: store.redo,
          design: () => setView('design'), runs: showRuns, shortcuts: () => setDialog('shortcuts'),
        }} />
      {message && <div data-testid="message" className={`message ${message.kind}`} role="status">{message.text}</div>}
      <div className="body">
        <Palette activities={activities} />
        <main onDrop={onDrop} onDragOver={(e) => { e.preventDefault(); e.dataTransfer.dropEffect = 'move'; }}>
          {view === 'runs' ? (
            <RunsTable runs={runs} onOpen={(id) => guard(() => openRun(id), `open run ${id}`)} onRefresh={refreshRuns} reproduction={reproduction}
              onRerun={(id) => rerun(id, 'rerun')} onReproduce={(id) => rerun(id, 'reproduce')} />
          ) : (
            <ReactFlow nodes={nodes} edges={edges} nodeTypes={nodeTypes} edgeTypes={edgeTypes} onConnect={onConnect} onNodesChange={onNodesChange} onNodeClick={(_, n) => setSelected(n.id)}
              onConnectStart={(_, h) => setConnecting(h?.handleId ? { kind: portKind(h.nodeId, h.handleId, h.handleType), handleType: h.handleType } : null)}
              onConnectEnd={() => setConnecting(null)}
              onNodeDragStop={(_, node) => edit(edits.place(node.id, node.position))}
              onEdgesDelete={(removed) => edit(edits.deleteEdges(removed))}
              onNodesDelete={(removed) => { edit(edits.deleteSteps(new Set(removed.map((n) => n.id)))); setSelected(null); }}
              onPaneClick={() => setSelected(null)} deleteKeyCode={['Delete', 'Backspace']} defaultViewport={{ x: 0, y: 0, zoom: 0.8 }} maxZoom={1.5}>
              <Background gap={20} color="#e3e7ee" />
              <Controls showInteractive={false} />
              <MiniMap pannable zoomable nodeColor={(n) => categoryOf(n.data?.descriptor?.category).color} nodeStrokeWidth={2} />
              <Legend activities={activities} />
            </ReactFlow>
          )}
        </main>
        <Inspector doc={doc} selected={selected} byType={byType} diagnostics={diagnostics} statuses={statuses}
          onRename={renameStep} onSetInput={(stepId, port, v) => edit(edits.setInput(stepId, port, v))} onView={setViewer}
          onFigures={(stepId, figures) => setViewer({ stepId, figures, digest: figures[0].digest })}
          workflow={{
            usage,
            onDescription: (d) => edit(edits.setDescription(d)),
            onSet: (n, def) => edit(edits.setParameter(n, def)),
            onRemove: (n) => edit(edits.removeParameter(n)),
            onRename: (n, to) => { if (doc.parameters?.[to]) say(`refused: a parameter named "${to}" exists`, 'error'); else edit(edits.renameParameter(n, to)); },
          }} />
      </div>
      <footer data-testid="logs" ref={logBox} onScroll={(e) => { const b = e.currentTarget; b.dataset.stuck = String(b.scrollTop + b.clientHeight >= b.scrollHeight - 24); }}>
        {logs.length === 0 && <div className="muted">{run ? `run ${run.id}` : 'Logs of the watched run appear here.'}</div>}
        {logs.slice(-500).map((l, k) => <div key={k}>{l}</div>)}
      </footer>
      {viewer && <Viewer artifact={viewer} onClose={() => setViewer(null)} />}
      <RunDialog open={dialog === 'run'} doc={doc} busy={busy} onClose={() => setDialog(null)} onRun={submit} />
      <Dialog open={dialog === 'shortcuts'} onClose={() => setDialog(null)} title="Keyboard shortcuts" testId="shortcuts-dialog">
        <table className="shortcuts"><tbody>{shortcutList.map(([k, what]) => <tr key={k}><td><kbd>{k}</kbd></td><td>{what}</td></tr>)}</tbody></table>
      </Dialog>
      <Dialog open={!!dialog?.confirm} onClose={() => setDialog(null)} title="Discard unsaved edits?" testId="confirm-dialog"
        footer={<>
          <button onClick={() => setDialog(null)} data-testid="confirm-keep">Keep editing</button>
          <button className="danger" data-testid="confirm-discard" onClick={() => { const go = dialog.confirm; setDialog(null); go(); }}>Discard and {dialog?.what}</button>
        </>}>
        <p>This workflow has edits that are not saved. Save first, or discard them.</p>
      </Dialog>
    </div>
  );
}

export default function App() {
  return <ReactFlowProvider><Designer /></ReactFlowProvider>;
}
