// The Run dialog: the workflow's description and its parameters (typed, with defaults and descriptions); what the
// user types here is sent as the run's parameter values, as `--set NAME=VALUE` does on the command line.
import { useEffect, useState } from 'react';
import { Play } from 'lucide-react';
import Dialog from './Dialog.jsx';

export default function RunDialog({ open, doc, busy, onClose, onRun }) {
  const parameters = Object.entries(doc.parameters ?? {});
  const [values, setValues] = useState({});
  useEffect(() => { if (open) setValues({}); }, [open]);
  const missing = parameters.filter(([n, p]) => p.default === undefined && !(values[n] ?? '').toString().trim()).map(([n]) => n);
  const submit = () => {
    const set = {};
    for (const [n, p] of parameters) {
      const v = values[n];
      if (v === undefined || v === '') continue;
      set[n] = p.type === 'integer' || p.type === 'number' ? Number(v) : p.type === 'boolean' ? v === true || v === 'true' : v;
    }
    onRun(set);
  };
  return (
    <Dialog open={open} onClose={onClose} title={`Run ${doc.name ?? 'workflow'}`} testId="run-dialog"
      footer={<>
        {missing.length > 0 && <span className="field-error">set {missing.join(', ')}</span>}
        <button className="primary" data-testid="run-submit" disabled={busy || missing.length > 0} onClick={submit}><Play size={14} /> {busy ? 'Submitting…' : 'Run'}</button>
      </>}>
      {doc.description && <p className="workflow-description" data-testid="run-description">{doc.description}</p>}
      {parameters.length === 0 && <p className="hint">This workflow has no parameters.</p>}
      {parameters.map(([name, p]) => (
        <div className="field" key={name}>
          <label htmlFor={`param-${name}`}>{name} <em>{p.type}{p.default === undefined ? ' · required' : ''}</em></label>
          {p.type === 'boolean' ? (
            <input id={`param-${name}`} type="checkbox" data-testid={`param-${name}`} checked={values[name] ?? p.default ?? false}
              onChange={(e) => setValues({ ...values, [name]: e.target.checked })} />
          ) : (
            <input id={`param-${name}`} data-testid={`param-${name}`} type={p.type === 'integer' || p.type === 'number' ? 'number' : 'text'}
              step={p.type === 'integer' ? 1 : 'any'} value={values[name] ?? ''} placeholder={p.default === undefined ? 'required' : `default: ${p.default}`}
              onChange={(e) => setValues({ ...values, [name]: e.target.value })}
              onKeyDown={(e) => { if (e.key === 'Enter' && !busy && missing.length === 0) submit(); }} />
          )}
          {p.description && <div className="help">{p.description}</div>}
        </div>
      ))}
    </Dialog>
  );
}
