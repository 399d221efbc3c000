// Workflow JSON <-> React Flow nodes and edges. The workflow object stays the source of truth.

export const kindColors = {
  Dataset: '#2f80ed', Model: '#9b51e0', Scores: '#f2994a', Circuit: '#eb5757', Report: '#27ae60',
  Json: '#828282', Plot: '#219653', Schema: '#f2c94c', Topics: '#00a3a3', Checkpoints: '#6d4c41', ErasureMatrix: '#c2185b', PatchingGrid: '#6a1b9a', ProbeResults: '#0277bd', SteeringVector: '#ef6c00', Featurizer: '#2e7d32', IIAResults: '#ad1457',
};
export const colorOf = (kind) => kindColors[kind] ?? '#555';

export const artifactInputs = (d) => d.inputs.filter((i) => i.type.isArtifact);
export const valueInputs = (d) => d.inputs.filter((i) => !i.type.isArtifact);

/** The references ({from: "step.output"}) of one input value, as [step, output] pairs. */
export function refs(value) {
  const list = Array.isArray(value) ? value : [value];
  return list.filter((v) => v && typeof v === 'object' && typeof v.from === 'string')
    .map((v) => { const k = v.from.lastIndexOf('.'); return [v.from.slice(0, k), v.from.slice(k + 1)]; });
}

export function toEdges(doc, byType) {
  const edges = [];
  for (const step of doc.steps ?? []) {
    const d = byType[step.activity];
    for (const [port, value] of Object.entries(step.inputs ?? {})) {
      const input = d?.inputs.find((i) => i.name === port);
      refs(value).forEach(([from, output], k) => {
        edges.push({
          id: `${from}.${output}->${step.id}.${port}#${k}`, type: 'routed',
          source: from, sourceHandle: output, target: step.id, targetHandle: port,
          style: { stroke: colorOf(input?.type.artifactKind), strokeWidth: 2 },
        });
      });
    }
  }
  return edges;
}

/** A new step id from an activity type: "attribute", "attribute2", ... */
export function newId(doc, type) {
  const base = type.split('.').pop().replace(/-([a-z])/g, (_, c) => c.toUpperCase());
  const taken = new Set((doc.steps ?? []).map((s) => s.id));
  if (!taken.has(base)) return base;
  for (let n = 2; ; n++) if (!taken.has(`${base}${n}`)) return `${base}${n}`;
}

/** Where a diagnostic belongs: {step index, input name} from "$.steps[3].inputs.count". */
export function locate(jsonPath) {
  const m = /^\$\.steps\[(\d+)\](?:\.inputs(?:\.([A-Za-z0-9_]+)|\['([^']+)'\]))?/.exec(jsonPath ?? '');
  return m ? { step: Number(m[1]), input: m[2] ?? m[3] ?? null } : null;
}
