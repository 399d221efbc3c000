// The inspector: the selected step's id, its artifact inputs (connections), a form for its value inputs generated
// from the activity's descriptor (a field can be bound to a workflow parameter, or unbound), its status and outputs
// after a run; with no step selected, the workflow's description and parameters. The workflow's problems below.
import { Download, Eye, Images, Link2, Link2Off } from 'lucide-react';
import { artifactInputs, colorOf, locate, refs, valueInputs } from '../graph.js';
import { duration } from '../format.js';
import ParametersEditor from './ParametersEditor.jsx';

export default function Inspector({ doc, selected, byType, diagnostics, statuses, onRename, onSetInput, onView, onFigures, workflow }) {
  const step = doc.steps?.find((s) => s.id === selected);
  const descriptor = step && byType[step.activity];
  const stepIndex = doc.steps?.findIndex((s) => s.id === selected);
  const fieldErrors = diagnostics.map((d) => ({ ...d, at: locate(d.jsonPath) })).filter((d) => d.at && d.at.step === stepIndex);
  const status = step && statuses[step.id];
  return (
    <aside className="panel" data-testid="panel">
      {step && descriptor ? (
        <>
          <h3>
            <input data-testid="step-id" className="step-id" defaultValue={step.id} key={step.id}
              onBlur={(e) => { if (!onRename(step.id, e.target.value.trim())) e.target.value = step.id; }}
              onKeyDown={(e) => { if (e.key === 'Enter') e.currentTarget.blur(); }} />
          </h3>
          <div className="summary">{descriptor.type} v{descriptor.version}: {descriptor.summary}</div>
          {fieldErrors.filter((d) => !d.at.input).map((d, k) => <div key={k} className="field-error">{d.message}</div>)}
          {artifactInputs(descriptor).map((p) => (
            <div key={p.name} className="field">
              <label style={{ borderLeft: `4px solid ${colorOf(p.type.artifactKind)}`, paddingLeft: 4 }}>{p.name} <em>{p.type.artifactKind}{p.type.isList ? ' list' : ''}{p.required ? ' · required' : ''}</em></label>
              <div className="connected">{refs(step.inputs?.[p.name]).map(([s, o]) => `${s}.${o}`).join(', ') || 'not connected'}</div>
              <div className="help">{p.help}</div>
              {fieldErrors.filter((d) => d.at.input === p.name).map((d, k) => <div key={k} className="field-error" data-testid={`error-${p.name}`}>{d.message}</div>)}
            </div>
          ))}
          {valueInputs(descriptor).map((p) => (
            <Field key={`${step.id}-${p.name}`} port={p} value={step.inputs?.[p.name]} errors={fieldErrors.filter((d) => d.at.input === p.name)}
              parameters={doc.parameters ?? {}} onChange={(v) => onSetInput(step.id, p.name, v)} />
          ))}
          {status && <Outputs status={status} onView={onView} onFigures={onFigures} stepId={step.id} />}
        </>
      ) : (
        <>
          <div className="hint">Drag activities from the left onto the canvas and connect outputs to inputs of the same colour; select a step to edit it.</div>
          <ParametersEditor doc={doc} {...workflow} />
        </>
      )}
      {diagnostics.length > 0 && (
        <div className="diagnostics" data-testid="diagnostics">
          <h4>Problems</h4>
          {diagnostics.map((d, k) => <div key={k}><code>{d.jsonPath}</code> {d.message}</div>)}
        </div>
      )}
    </aside>
  );
}

const compatible = (port, p) => {
  const t = port.type.value;
  if (port.isPath || t === 'path') return p.type === 'path' || p.type === 'string';
  if (t === 'integer') return p.type === 'integer';
  if (t === 'number') return p.type === 'number' || p.type === 'integer';
  if (t === 'boolean') return p.type === 'boolean';
  if (t === 'string') return p.type === 'string' || p.type === 'path';
  return true;
};

/** One value input, generated from its descriptor: type, default, constraints and help; bindable to a parameter. */
function Field({ port, value, errors, parameters, onChange: set }) {
  const t = port.type.value;
  // Only real changes reach the document (and the undo history).
  const onChange = (v) => { if (JSON.stringify(v) !== JSON.stringify(value)) set(v); };
  const bound = value && typeof value === 'object' && !Array.isArray(value) && 'param' in value ? value.param : null;
  const candidates = Object.entries(parameters).filter(([, p]) => compatible(port, p)).map(([n]) => n);
  let control;
  if (bound) {
    const p = parameters[bound];
    control = (
      <div className="bound" data-testid={`bound-${port.name}`}>
        <Link2 size={14} /> parameter <strong>{bound}</strong>{p?.default !== undefined ? <small> (default {String(p.default)})</small> : <small> (set at run time)</small>}
        <button data-testid={`unbind-${port.name}`} title="Use a value of this step's own instead of the parameter" onClick={() => set(p?.default)}><Link2Off size={13} /> Unbind</button>
      </div>
    );
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
      {!bound && candidates.length > 0 && (
        <select className="bind" data-testid={`bind-${port.name}`} value="" aria-label={`bind ${port.name} to a parameter`} onChange={(e) => e.target.value && set({ param: e.target.value })}>
          <option value="">bind to a parameter…</option>
          {candidates.map((n) => <option key={n} value={n}>{n}</option>)}
        </select>
      )}
      <div className="help">{port.help}</div>
      {errors.map((d, k) => <div key={k} className="field-error" data-testid={`error-${port.name}`}>{d.message}</div>)}
    </div>
  );
}

function Outputs({ status, onView, onFigures, stepId }) {
  const outputs = Object.entries(status.outputs ?? {});
  const images = outputs.filter(([, o]) => o.mediaType?.startsWith('image/'));
  return (
    <div className="outputs" data-testid="outputs">
      <h4>
        <span className={`pill s-${status.status}`}>{status.status}</span>
        {status.durationMs != null && <small> {duration(status.durationMs)}</small>}
        {status.cachedFrom ? <small> from run {status.cachedFrom}</small> : null}
      </h4>
      {status.progressText && <div className="help">{status.progressText}</div>}
      {status.error && <div className="field-error">{status.error}</div>}
      {outputs.map(([port, o]) => (
        <div key={port} className="output-row">
          <button data-testid={`view-${port}`} onClick={() => onView({ port, stepId, ...o })}><Eye size={13} /> {port}</button>
          <small>{o.kind} · {o.size.toLocaleString()} B</small>
          <a href={`/api/artifacts/${o.digest}`} download title="Download" data-testid={`download-${port}`}><Download size={13} /></a>
        </div>
      ))}
      {images.length > 1 && (
        <button data-testid="view-figures" onClick={() => onFigures(stepId, images.map(([port, o]) => ({ port, ...o })))}><Images size={13} /> All {images.length} figures</button>
      )}
    </div>
  );
}
