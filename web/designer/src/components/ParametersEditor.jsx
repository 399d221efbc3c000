// The workflow's own section: its description and its parameters (name, type, default, description), edited in
// place. A parameter is used by binding a step's field to it in the inspector.
import { useState } from 'react';
import { Plus, Trash2 } from 'lucide-react';

const types = ['string', 'integer', 'number', 'boolean', 'path'];

function parse(type, text) {
  if (text === '') return undefined;
  if (type === 'integer' || type === 'number') { const n = Number(text); return Number.isNaN(n) ? text : n; }
  if (type === 'boolean') return text === 'true';
  return text;
}

export default function ParametersEditor({ doc, onDescription, onSet, onRemove, onRename, usage }) {
  const [adding, setAdding] = useState('');
  const parameters = Object.entries(doc.parameters ?? {});
  return (
    <div className="workflow-section" data-testid="parameters-editor">
      <h3>Workflow</h3>
      <div className="field">
        <label htmlFor="wf-description">description</label>
        <textarea id="wf-description" data-testid="wf-description" key={doc.description ?? ''} defaultValue={doc.description ?? ''}
          onBlur={(e) => { if ((doc.description ?? '') !== e.target.value) onDescription(e.target.value || undefined); }} />
      </div>
      <h4>Parameters</h4>
      {parameters.length === 0 && <div className="hint">None. Add one, then bind a step's field to it.</div>}
      {parameters.map(([name, p]) => (
        <div className="param-card" key={name} data-testid={`parameter-${name}`}>
          <div className="param-head">
            <input className="param-name" defaultValue={name} key={name} aria-label="parameter name" onBlur={(e) => { const n = e.target.value.trim(); if (n && n !== name) onRename(name, n); else e.target.value = name; }} />
            <select value={p.type} aria-label="type" onChange={(e) => onSet(name, { ...p, type: e.target.value })}>{types.map((t) => <option key={t}>{t}</option>)}</select>
            <button className="icon-button" title="Remove the parameter" aria-label={`remove ${name}`} onClick={() => onRemove(name)}><Trash2 size={14} /></button>
          </div>
          <input data-testid={`parameter-${name}-default`} placeholder="default (empty: required)" defaultValue={p.default === undefined ? '' : String(p.default)} key={`${name}-${String(p.default)}`}
            onBlur={(e) => { const v = parse(p.type, e.target.value); if (v !== p.default) { const next = { ...p }; if (v === undefined) delete next.default; else next.default = v; onSet(name, next); } }} />
          <input placeholder="description" defaultValue={p.description ?? ''} key={`${name}-d-${p.description ?? ''}`}
            onBlur={(e) => { if ((p.description ?? '') !== e.target.value) { const next = { ...p }; if (e.target.value) next.description = e.target.value; else delete next.description; onSet(name, next); } }} />
          <div className="help">{usage[name]?.length ? `used by ${usage[name].join(', ')}` : 'not used by any step'}</div>
        </div>
      ))}
      <div className="param-add">
        <input data-testid="new-parameter" placeholder="new parameter name" value={adding} onChange={(e) => setAdding(e.target.value)}
          onKeyDown={(e) => { if (e.key === 'Enter' && adding.trim()) { onSet(adding.trim(), { type: 'string' }); setAdding(''); } }} />
        <button data-testid="add-parameter" disabled={!adding.trim() || doc.parameters?.[adding.trim()]} onClick={() => { onSet(adding.trim(), { type: 'string' }); setAdding(''); }}><Plus size={14} /> Add</button>
      </div>
    </div>
  );
}
