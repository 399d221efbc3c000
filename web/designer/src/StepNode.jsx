import { Handle, Position } from '@xyflow/react';
import { artifactInputs, colorOf, valueInputs } from './graph.js';
import { categoryOf } from './icons.js';
import { clock, duration, short } from './format.js';

const statusText = { pending: 'pending', queued: 'queued', running: 'running', computed: 'computed', cached: 'cached', failed: 'failed', skipped: 'skipped', cancelled: 'cancelled' };
const ROW = 24, TOP = 54;

/**
 * A step: typed input ports on the left, outputs on the right, coloured by artifact kind (list inputs are square);
 * the category's icon and colour; the values set on it; its live status, progress text and clock below. While a
 * connection is dragged, ports that can take it light up and the others fade.
 */
export default function StepNode({ id, data, selected }) {
  const { step, descriptor, status, invalid, connecting, now } = data;
  const inputs = descriptor ? artifactInputs(descriptor) : [];
  const outputs = descriptor?.outputs ?? [];
  const rows = Math.max(inputs.length, outputs.length, 1);
  const { icon: Icon, color } = categoryOf(descriptor?.category);
  const values = descriptor ? valueInputs(descriptor).filter((p) => step.inputs?.[p.name] !== undefined).slice(0, 3) : [];
  const match = (kind, type) => (connecting ? (connecting.kind === kind && connecting.handleType !== type ? 'compatible' : 'incompatible') : '');
  return (
    <div className={`step ${selected ? 'selected' : ''} ${invalid ? 'invalid' : ''} status-${status?.status ?? 'none'}`} data-testid={`node-${id}`}
      style={{ borderTopColor: color }}>
      <div className="step-head" style={{ color }}><Icon size={14} /><span className="step-title">{id}</span></div>
      <div className="step-type">{step.activity}</div>
      <div className="ports" style={{ height: rows * ROW + 4 }} />
      {inputs.map((p, k) => (
        <div key={p.name}>
          <Handle type="target" position={Position.Left} id={p.name} data-testid={`in-${id}-${p.name}`}
            className={`${p.type.isList ? 'list' : ''} ${match(p.type.artifactKind, 'target')}`}
            style={{ top: TOP + k * ROW, background: colorOf(p.type.artifactKind) }} title={`${p.name}: ${p.type.artifactKind}${p.type.isList ? ' (list: takes several)' : ''}`} />
          <span className="port in" style={{ top: TOP - 8 + k * ROW }}>{p.name}{p.type.isList ? ' [ ]' : ''}</span>
        </div>
      ))}
      {outputs.map((o, k) => (
        <div key={o.name}>
          <Handle type="source" position={Position.Right} id={o.name} data-testid={`out-${id}-${o.name}`} className={match(o.kind, 'source')}
            style={{ top: TOP + k * ROW, background: colorOf(o.kind) }} title={`${o.name}: ${o.kind}`} />
          <span className="port out" style={{ top: TOP - 8 + k * ROW }}>{o.name}</span>
        </div>
      ))}
      {values.length > 0 && (
        <div className="step-values" data-testid={`values-${id}`}>
          {values.map((p) => `${p.name}=${short(step.inputs[p.name])}`).join(' · ')}
        </div>
      )}
      {status && (
        <div className="step-status" data-testid={`status-${id}`} data-status={status.status}>
          <span className={`pill s-${status.status}`}>{statusText[status.status] ?? status.status}</span>
          {status.status === 'running' && status.startedAt && <span className="ms"> {clock(status.startedAt, now)}</span>}
          {status.durationMs != null && status.status !== 'running' && <span className="ms"> {duration(status.durationMs)}</span>}
          {status.status === 'running' && status.progress != null && <progress max="1" value={status.progress} />}
          {status.status === 'running' && status.progressText && <div className="progress-text" data-testid={`progress-${id}`}>{status.progressText}</div>}
          {status.error && <div className="err">{status.error}</div>}
        </div>
      )}
    </div>
  );
}
