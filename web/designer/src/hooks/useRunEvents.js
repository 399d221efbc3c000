// A run's live event stream (server-sent events): per-step statuses and the log. The EventSource belongs to the
// watched run id and is closed when the run ends, when another run is watched, and when the page goes away.
import { useEffect, useState } from 'react';

export function useRunEvents(runId, onRunFinished) {
  const [statuses, setStatuses] = useState({});
  const [logs, setLogs] = useState([]);

  useEffect(() => {
    if (!runId) return undefined;
    const source = new EventSource(`/api/runs/${runId}/events`);
    source.addEventListener('step', (ev) => {
      const s = JSON.parse(ev.data);
      setStatuses((old) => ({ ...old, [s.id]: { ...old[s.id], status: s.status, error: s.error, durationMs: s.durationMs, outputs: s.outputs, cachedFrom: s.cachedFrom } }));
      setLogs((l) => [...l, `${s.id}: ${s.status}${s.error ? ` — ${s.error}` : ''}`]);
    });
    source.addEventListener('progress', (ev) => {
      const e = JSON.parse(ev.data);
      setStatuses((old) => ({ ...old, [e.stepId]: { ...old[e.stepId], status: 'running', progress: e.data.fraction } }));
    });
    source.addEventListener('log', (ev) => { const e = JSON.parse(ev.data); setLogs((l) => [...l, `${e.stepId}: ${e.data.message}`]); });
    source.addEventListener('run', (ev) => {
      const r = JSON.parse(ev.data);
      setLogs((l) => [...l, `run ${r.id}: ${r.status}${r.error ? ` — ${r.error}` : ''}`]);
      onRunFinished?.(r);
      source.close();
    });
    source.onerror = () => source.close();
    return () => source.close();
    // onRunFinished is read when the run ends; a new callback identity must not reopen the stream.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [runId]);

  return { statuses, setStatuses, logs, setLogs };
}
