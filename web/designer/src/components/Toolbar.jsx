// The header: open, new, name, save, validate, run, layout, undo/redo, the runs view, the API key, Hangfire's jobs.
export default function Toolbar({ saved, name, onName, apiKey, onApiKey, view, on }) {
  return (
    <header>
      <strong>Pipelines</strong>
      <select data-testid="open" value="" onChange={(e) => e.target.value && on.open(e.target.value)}>
        <option value="">Open…</option>
        {saved.map((w) => <option key={w.name} value={w.name}>{w.name}</option>)}
      </select>
      <button onClick={on.newWorkflow}>New</button>
      <input data-testid="name" className="name" value={name} onChange={(e) => onName(e.target.value)} title="Saved as workflows/NAME.json" />
      <button data-testid="save" onClick={on.save}>Save</button>
      <button data-testid="validate" onClick={on.validate}>Validate</button>
      <button data-testid="run" onClick={on.run}>Run</button>
      <button onClick={on.layout} data-testid="layout">Auto-layout</button>
      <button onClick={on.undo} data-testid="undo" title="Ctrl+Z">Undo</button>
      <button onClick={on.redo} data-testid="redo" title="Ctrl+Shift+Z">Redo</button>
      <button onClick={view === 'runs' ? on.design : on.runs} data-testid="runs">{view === 'runs' ? 'Designer' : 'Runs'}</button>
      <input data-testid="key" type="password" placeholder="API key" value={apiKey} onChange={(e) => onApiKey(e.target.value)} />
      <a href="/hangfire" target="_blank" rel="noreferrer">Jobs</a>
    </header>
  );
}
