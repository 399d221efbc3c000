// Exact round trips: a workflow file is kept as text, and saving rewrites only what changed. The parser records the
// text span of every root member and of every step, so unchanged parts are copied byte for byte.

function parseSpans(text) {
  let i = 0;
  const ws = () => { while (i < text.length && ' \t\r\n'.includes(text[i])) i++; };
  const value = () => {
    ws();
    const start = i;
    const c = text[i];
    if (c === '{') {
      i++;
      const members = [];
      ws();
      if (text[i] === '}') { i++; return { start, end: i, members }; }
      for (;;) {
        ws();
        const keyStart = i;
        const key = JSON.parse(stringToken());
        ws(); i++; // ':'
        const v = value();
        members.push({ key, keyStart, ...v });
        ws();
        if (text[i] === ',') { i++; continue; }
        i++; // '}'
        return { start, end: i, members };
      }
    }
    if (c === '[') {
      i++;
      const items = [];
      ws();
      if (text[i] === ']') { i++; return { start, end: i, items }; }
      for (;;) {
        items.push(value());
        ws();
        if (text[i] === ',') { i++; continue; }
        i++; // ']'
        return { start, end: i, items };
      }
    }
    if (c === '"') { stringToken(); return { start, end: i }; }
    while (i < text.length && !',}] \t\r\n'.includes(text[i])) i++;
    return { start, end: i };
  };
  const stringToken = () => {
    const start = i;
    i++;
    while (text[i] !== '"') { if (text[i] === '\\') i++; i++; }
    i++;
    return text.slice(start, i);
  };
  return value();
}

const equal = (a, b) => JSON.stringify(a) === JSON.stringify(b);

/** One line, with a space after ':' and ',' and inside braces: the style of the shipped workflows' steps. */
export function compact(v) {
  if (Array.isArray(v)) return v.length === 0 ? '[]' : `[ ${v.map(compact).join(', ')} ]`;
  if (v && typeof v === 'object') {
    const entries = Object.entries(v);
    return entries.length === 0 ? '{}' : `{ ${entries.map(([k, x]) => `${JSON.stringify(k)}: ${compact(x)}`).join(', ')} }`;
  }
  return JSON.stringify(v);
}

function indentOf(text, at) {
  const lineStart = text.lastIndexOf('\n', at - 1) + 1;
  return text.slice(lineStart, at).match(/^\s*/)[0];
}

function block(v, indent) {
  return JSON.stringify(v, null, 2).split('\n').map((l, k) => (k === 0 ? l : indent + l)).join('\n');
}

/** A parsed workflow file: the object, and the original text to preserve. */
export function openText(text) {
  return { original: text, originalDoc: JSON.parse(text), spans: parseSpans(text) };
}

/** Text for <paramref name="doc"/>: the original where nothing changed, rewritten per member and per step otherwise. */
export function saveText(file, doc) {
  if (file && equal(doc, file.originalDoc)) return file.original;
  if (!file) return JSON.stringify(doc, null, 2) + '\n';
  const { original, originalDoc, spans } = file;
  const memberIndent = spans.members.length ? indentOf(original, spans.members[0].keyStart) : '  ';
  const out = [];
  for (const [key, value] of Object.entries(doc)) {
    const span = spans.members.find((m) => m.key === key);
    if (span && equal(value, originalDoc[key])) {
      out.push(original.slice(span.keyStart, span.end));
    } else if (key === 'steps' && span && span.items) {
      out.push(`${JSON.stringify(key)}: ${steps(value, originalDoc.steps ?? [], span, original, memberIndent)}`);
    } else {
      out.push(`${JSON.stringify(key)}: ${block(value, memberIndent)}`);
    }
  }
  const tail = original.endsWith('\n') ? '\n' : '';
  return `{\n${out.map((m) => memberIndent + m).join(',\n')}\n}${tail}`;
}

function steps(list, originals, span, original, memberIndent) {
  const itemIndent = span.items.length ? indentOf(original, span.items[0].start) : memberIndent + '  ';
  const single = (it) => !original.slice(it.start, it.end).includes('\n');
  // A changed step keeps its own style; a new one takes the style most steps have.
  const mostlyOneLine = span.items.filter(single).length * 2 >= span.items.length;
  const lines = list.map((step) => {
    const k = originals.findIndex((o) => o.id === step.id);
    if (k >= 0 && equal(step, originals[k])) return original.slice(span.items[k].start, span.items[k].end);
    return (k >= 0 ? single(span.items[k]) : mostlyOneLine) ? compact(step) : block(step, itemIndent);
  });
  if (lines.length === 0) return '[]';
  return `[\n${lines.map((l) => itemIndent + l).join(',\n')}\n${memberIndent}]`;
}
