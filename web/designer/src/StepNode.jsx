import { Handle, Position } from '@xyflow/react';
import { artifactInputs, colorOf } from './graph.js';

const statusText = { pending: 'pending', queued: 'queued', running: 'running', computed: 'done', cached: 'cached', failed: 'failed', skipped: 'skipped', cancelled: 'cancelled' };

/** A step: typed input ports on the left, outputs on the right, coloured by artifact kind; live status below. */
export default function StepNode({ id, data, selected }) {
  const { step, descriptor, status, invalid } = data;
  const inputs = descriptor ? artifactInputs(descriptor) : [];
  const outputs = descriptor?.outputs ?? [];
  const rows = Math.max(inputs.length, outputs.length, 1);
  return (
    <div className={`step ${selected ? 'selected' : ''} ${invalid ? 'invalid' : ''} status-${status?.status ?? 'none'}`} data-testid={`node-${id}`} style={{ minHeight: 54 + rows * 22 }}>
      <div className="step-title">{id}</div>
      <div className="step-type">{step.activity}</div>
      {inputs.map((p, k) => (
        <div key={p.name}>
          <Handle type="target" position={Position.Left} id={p.name} data-testid={`in-${id}-${p.name}`}
            style={{ top: 52 + k * 22, background: colorOf(p.type.artifactKind) }} title={`${p.name}: ${p.type.artifactKind}${p.type.isList ? '[]' : ''}`} />
          <span className="port in" style={{ top: 45 + k * 22 }}>{p.name}</span>
        </div>
      ))}
      {outputs.map((o, k) => (
        <div key={o.name}>
          <Handle type="source" position={Position.Right} id={o.name} data-testid={`out-${id}-${o.name}`}
            style={{ top: 52 + k * 22, background: colorOf(o.kind) }} title={`${o.name}: ${o.kind}`} />
          <span className="port out" style={{ top: 45 + k * 22 }}>{o.name}</span>
        </div>
      ))}
      {status && (
        <div className="step-status" data-testid={`status-${id}`} data-status={status.status}>
          {statusText[status.status] ?? status.status}
          {status.status === 'running' && status.progress != null && <progress max="1" value={status.progress} />}
          {status.durationMs != null && <span className="ms"> {Math.round(status.durationMs)} ms</span>}
          {status.error && <div className="err">{status.error}</div>}
        </div>
      )}
    </div>
  );
}
