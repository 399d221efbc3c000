// Past runs: open one on the canvas, re-run it, or reproduce it (recompute without the cache and compare digests).
export default function RunsTable({ runs, onOpen, onRerun, onReproduce }) {
  return (
    <div className="runs" data-testid="runs-list">
      <h3>Runs</h3>
      <table>
        <thead><tr><th>run</th><th>workflow</th><th>status</th><th>started</th><th /></tr></thead>
        <tbody>
          {runs.map((r) => (
            <tr key={r.id}>
              <td><a href="#" onClick={(e) => { e.preventDefault(); onOpen(r.id); }} data-testid={`run-${r.id}`}>{r.id}</a></td>
              <td>{r.workflow}</td><td className={`s-${r.status}`}>{r.status}</td><td>{new Date(r.startedAt).toLocaleString()}</td>
              <td>
                <button onClick={() => onRerun(r.id)}>Re-run</button>
                <button onClick={() => onReproduce(r.id)}>Reproduce</button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
