// The server's REST API. Mutating calls carry the API key the user entered (kept in localStorage).
export const keyStore = {
  get: () => localStorage.getItem('pipelines-api-key') ?? '',
  set: (k) => localStorage.setItem('pipelines-api-key', k),
};

async function call(method, path, body, raw = false) {
  const headers = { 'X-Api-Key': keyStore.get() };
  let payload;
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    payload = typeof body === 'string' ? body : JSON.stringify(body);
  }
  const response = await fetch(path, { method, headers, body: payload });
  const text = await response.text();
  if (!response.ok) {
    let message = text;
    try { message = JSON.parse(text).error ?? text; } catch { /* not JSON */ }
    const error = new Error(`${response.status}: ${message}`);
    error.status = response.status;
    try { error.body = JSON.parse(text); } catch { /* not JSON */ }
    throw error;
  }
  return raw ? text : text ? JSON.parse(text) : null;
}

export const api = {
  activities: () => call('GET', '/api/activities'),
  workflows: () => call('GET', '/api/workflows'),
  workflowText: (name) => call('GET', `/api/workflows/${encodeURIComponent(name)}`, undefined, true),
  saveWorkflow: (name, text) => call('PUT', `/api/workflows/${encodeURIComponent(name)}`, text),
  validate: (text) => call('POST', '/api/workflows/validate', text),
  submit: (definition, parameters) => call('POST', '/api/runs', { definition, parameters }),
  runs: () => call('GET', '/api/runs?limit=100'),
  run: (id) => call('GET', `/api/runs/${id}`),
  rerun: (id) => call('POST', `/api/runs/${id}/rerun`),
  reproduce: (id) => call('POST', `/api/runs/${id}/reproduce`),
  cancel: (id) => call('POST', `/api/runs/${id}/cancel`),
  resume: (id) => call('POST', `/api/runs/${id}/resume`),
  artifact: (digest) => call('GET', `/api/artifacts/${digest}`),
  artifactText: (digest, path) => call('GET', `/api/artifacts/${digest}${path ? '/' + path : ''}`, undefined, true),
};

/** A file of an artifact as bytes (GET needs no key). */
export async function artifactBytes(digest, path) {
  const response = await fetch(`/api/artifacts/${digest}${path ? '/' + path : ''}`);
  if (!response.ok) throw new Error(`${response.status}: cannot read artifact ${digest.slice(0, 12)}${path ? '/' + path : ''}`);
  return response.arrayBuffer();
}

/** JSON Lines as rows; at most `limit` rows are kept (the viewer says when it cut). */
export function parseJsonl(text, limit = 100000) {
  const rows = [];
  let cut = false;
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    if (rows.length >= limit) { cut = true; break; }
    try { rows.push(JSON.parse(line)); } catch { rows.push({ '(unparsed line)': line }); }
  }
  return { rows, cut };
}
