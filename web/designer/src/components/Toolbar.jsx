// The header: open, new, name, save, validate; run, cancel and resume with the watched run's status and clock;
// layout, undo/redo, the runs view, shortcuts, the API key, Hangfire's jobs and the OpenAPI document.
import { Briefcase, CircleCheck, FilePlus, History, Keyboard, LayoutGrid, Play, Redo2, RotateCcw, Save, Square, Undo2, Workflow } from 'lucide-react';
import { clock } from '../format.js';

export default function Toolbar({ saved, name, onName, apiKey, onApiKey, view, dirty, busy, run, connection, now, on }) {
  const running = run?.status === 'running';
  return (
    <header>
      <strong className="brand"><Workflow size={18} /> Pipelines</strong>
      <select data-testid="open" value="" onChange={(e) => e.target.value && on.open(e.target.value)} aria-label="Open a saved workflow">
        <option value="">Open…</option>
        {saved.map((w) => <option key={w.name} value={w.name} title={w.description ?? ''}>{w.name}</option>)}
      </select>
      <button onClick={on.newWorkflow} title="New workflow"><FilePlus size={14} /> New</button>
      <input data-testid="name" className="name" value={name} onChange={(e) => onName(e.target.value)} title="Saved as workflows/NAME.json" aria-label="workflow name" />
      {dirty && <span className="dirty" data-testid="dirty" title="Unsaved edits">●</span>}
      <button data-testid="save" onClick={on.save} title="Ctrl+S"><Save size={14} /> Save</button>
      <button data-testid="validate" onClick={on.validate}><CircleCheck size={14} /> Validate</button>
      <span className="sep" />
      <button data-testid="run" className="primary" onClick={on.run} disabled={busy} title="Ctrl+Enter"><Play size={14} /> {busy ? 'Submitting…' : 'Run'}</button>
      {running && <button data-testid="cancel" onClick={on.cancel} className="danger"><Square size={13} /> Cancel</button>}
      {run && (run.status === 'failed' || run.status === 'cancelled') && <button data-testid="resume" onClick={on.resume}><RotateCcw size={14} /> Resume</button>}
      {run && (
        <span className="runinfo" data-testid="run-info" data-run={run.id} data-status={run.status}>
          <span className={`pill s-${run.status}`}>{run.status}</span> {run.id}
          {run.startedAt && <span className="clock" data-testid="run-clock"> {clock(run.startedAt, run.endedAt ? new Date(run.endedAt).getTime() : now)}</span>}
          {connection === 'reconnecting' && <span className="warn"> reconnecting…</span>}
        </span>
      )}
      <span className="grow" />
      <button onClick={on.layout} data-testid="layout" title="Auto-layout (L)"><LayoutGrid size={14} /></button>
      <button onClick={on.undo} data-testid="undo" title="Undo (Ctrl+Z)"><Undo2 size={14} /></button>
      <button onClick={on.redo} data-testid="redo" title="Redo (Ctrl+Shift+Z)"><Redo2 size={14} /></button>
      <button onClick={view === 'runs' ? on.design : on.runs} data-testid="runs"><History size={14} /> {view === 'runs' ? 'Designer' : 'Runs'}</button>
      <button onClick={on.shortcuts} data-testid="shortcuts" title="Keyboard shortcuts (?)"><Keyboard size={14} /></button>
      <input data-testid="key" type="password" placeholder="API key" value={apiKey} onChange={(e) => onApiKey(e.target.value)} aria-label="API key" />
      <a href="/hangfire" target="_blank" rel="noreferrer" title="Hangfire's dashboard"><Briefcase size={14} /> Jobs</a>
      <a href="/openapi/v1.json" target="_blank" rel="noreferrer" title="The REST API (OpenAPI)">API</a>
    </header>
  );
}
