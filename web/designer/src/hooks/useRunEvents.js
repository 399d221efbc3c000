// A run's live event stream (server-sent events). On every (re)connection the server sends each step's status, so
// attaching to a running run after a reload, or opening one from the Runs list, shows where it is and keeps updating.
// A dropped stream reconnects (1 s, then up to 5 s apart) until the run ends; the EventSource is closed when the run
// ends, when another run is watched, and when the page goes away.
import { useEffect, useRef, useState } from 'react';

/** generation: bump it to reattach to the same run (after a resume). */
export function useRunEvents(runId, generation, onRunFinished) {
  const [statuses, setStatuses] = useState({});
  const [logs, setLogs] = useState([]);
  const [run, setRun] = useState(null); // {id, status, startedAt, endedAt, error, kind, origin}
  const [connection, setConnection] = useState('idle'); // idle | open | reconnecting | closed
  const finished = useRef(onRunFinished);
  finished.current = onRunFinished;

  useEffect(() => {
    if (!runId) { setConnection('idle'); return undefined; }
    let source = null, timer = null, attempts = 0, done = false;
    setRun((r) => (r?.id === runId ? r : { id: runId, status: 'running' }));
    const connect = () => {
      source = new EventSource(`/api/runs/${encodeURIComponent(runId)}/events`);
      source.onopen = () => { attempts = 0; setConnection('open'); };
      source.addEventListener('step', (ev) => {
        const s = JSON.parse(ev.data);
        setStatuses((old) => {
          const before = old[s.id];
          const next = { ...before, status: s.status, error: s.error, durationMs: s.durationMs, outputs: s.outputs, cachedFrom: s.cachedFrom, startedAt: s.startedAt ?? before?.startedAt };
          if (s.status !== 'running') { next.progress = undefined; next.progressText = undefined; }
          return { ...old, [s.id]: next };
        });
        setLogs((l) => (l.at(-1) === `${s.id}: ${s.status}` ? l : [...l, `${s.id}: ${s.status}${s.error ? ` — ${s.error}` : ''}`]));
      });
      source.addEventListener('step-started', (ev) => {
        const e = JSON.parse(ev.data);
        setStatuses((old) => ({ ...old, [e.stepId]: { ...old[e.stepId], status: 'running', startedAt: new Date().toISOString() } }));
      });
      source.addEventListener('progress', (ev) => {
        const e = JSON.parse(ev.data);
        setStatuses((old) => ({ ...old, [e.stepId]: { ...old[e.stepId], status: 'running', progress: e.data.fraction, progressText: e.data.message } }));
      });
      source.addEventListener('log', (ev) => { const e = JSON.parse(ev.data); setLogs((l) => [...l, `${e.stepId}: ${e.data.message}`]); });
      source.addEventListener('warning', (ev) => { const e = JSON.parse(ev.data); setLogs((l) => [...l, `warning: ${e.data.message}`]); });
      source.addEventListener('run', (ev) => {
        const r = JSON.parse(ev.data);
        done = true;
        setRun(r);
        setLogs((l) => [...l, `run ${r.id}: ${r.status}${r.error ? ` — ${r.error}` : ''}`]);
        setConnection('closed');
        source.close();
        finished.current?.(r);
      });
      source.onerror = () => {
        source.close();
        if (done) return;
        setConnection('reconnecting');
        attempts++;
        timer = setTimeout(connect, Math.min(5000, 1000 * attempts));
      };
    };
    connect();
    return () => { done = true; clearTimeout(timer); source?.close(); };
  }, [runId, generation]);

  return { statuses, setStatuses, logs, setLogs, run, setRun, connection };
}
