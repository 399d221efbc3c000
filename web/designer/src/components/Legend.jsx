// The canvas legend: the artifact kinds the loaded activities use, with their port colours.
import { colorOf } from '../graph.js';

export default function Legend({ activities }) {
  const kinds = [...new Set(activities.flatMap((a) => [...a.outputs.map((o) => o.kind), ...a.inputs.filter((i) => i.type.isArtifact).map((i) => i.type.artifactKind)]))].sort();
  return (
    <div className="legend" data-testid="legend">
      {kinds.map((k) => <span key={k}><i style={{ background: colorOf(k) }} />{k}</span>)}
      <span><i className="square" />list input</span>
    </div>
  );
}
