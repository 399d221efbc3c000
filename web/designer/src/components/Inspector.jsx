// The inspector: the selected step's id, its artifact inputs (connections), a form for its value inputs generated
// from the activity's descriptor, its status and outputs after a run, and the workflow's problems.
import { artifactInputs, colorOf, locate, refs, valueInputs } from '../graph.js';

export default function Inspector({ doc, selected, byType, diagnostics, statuses, onRename, onSetInput, onView }) {
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
            <input data-testid="step-id" defaultValue={step.id} key={step.id} onBlur={(e) => onRename(step.id, e.target.value.trim())} />
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
              onChange={(v) => onSetInput(step.id, p.name, v)} />
          ))}
          {status && <Outputs status={status} onView={onView} />}
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
  );
}

/** One value input, generated from its descriptor: type, default, constraints and help. */
function Field({ port, value, errors, onChange: set }) {
  const t = port.type.value;
  // Only real changes reach the document (and the undo history).
  const onChange = (v) => { if (JSON.stringify(v) !== JSON.stringify(value)) set(v); };
  const isRef = value && typeof value === 'object' && !Array.isArray(value) && ('param' in value || 'from' in value);
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
      <div className="help">{port.help}</div>
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
