// Automatic left-to-right layout of a workflow's steps (dagre), as positions by step id.
import dagre from '@dagrejs/dagre';
import { refs } from './graph.js';

export function autoLayout(doc) {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: 'LR', nodesep: 50, ranksep: 110 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const s of doc.steps ?? []) g.setNode(s.id, { width: 236, height: 140 });
  for (const s of doc.steps ?? []) {
    for (const v of Object.values(s.inputs ?? {})) for (const [from] of refs(v)) if (g.hasNode(from)) g.setEdge(from, s.id);
  }
  dagre.layout(g);
  const positions = {};
  for (const s of doc.steps ?? []) { const n = g.node(s.id); positions[s.id] = { x: Math.round(n.x - 118), y: Math.round(n.y - 70) }; }
  return positions;
}
