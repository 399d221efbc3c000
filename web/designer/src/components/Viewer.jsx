// The artifact viewer: reports and plots inline, JSON pretty-printed, directories as file lists.
import { useEffect, useState } from 'react';
import { api } from '../api.js';

export default function Viewer({ artifact, onClose }) {
  const [text, setText] = useState(null);
  const url = `/api/artifacts/${artifact.digest}`;
  const kind = artifact.isDirectory ? 'dir' : artifact.mediaType.startsWith('image/') ? 'image' : artifact.mediaType === 'text/html' ? 'html' : 'text';
  useEffect(() => {
    if (kind === 'text') api.artifactText(artifact.digest).then((t) => { try { setText(JSON.stringify(JSON.parse(t), null, 2)); } catch { setText(t); } });
    if (kind === 'dir') api.artifact(artifact.digest).then((d) => setText(d.files));
  }, [artifact.digest, kind]);
  return (
    <div className="viewer" data-testid="viewer">
      <div className="viewer-bar"><strong>{artifact.port}</strong> <small>{artifact.kind} · {artifact.mediaType}</small> <a href={url} target="_blank" rel="noreferrer">open</a> <button onClick={onClose}>Close</button></div>
      {kind === 'image' && <img src={url} alt={artifact.port} />}
      {kind === 'html' && <iframe title={artifact.port} src={url} data-testid="report-frame" />}
      {kind === 'text' && <pre>{text}</pre>}
      {kind === 'dir' && <ul>{(text ?? []).map((f) => <li key={f}><a href={`${url}/${f}`} target="_blank" rel="noreferrer">{f}</a></li>)}</ul>}
    </div>
  );
}
