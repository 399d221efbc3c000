// The document store: the workflow being edited (the source of truth), the displayed node positions, and the undo
// history. Every edit is a pure function of the current state, applied by the reducer, so handlers never act on a
// stale copy of the document (two quick edits, or an edit racing a run's events, both land).
import { useCallback, useMemo, useReducer } from 'react';
import { refs } from '../graph.js';

export const clone = (v) => JSON.parse(JSON.stringify(v));
export const emptyDoc = () => ({ $schema: './workflow.schema.json', name: 'untitled', steps: [] });

const initial = { doc: emptyDoc(), positions: {}, past: [], future: [] };

function reducer(state, action) {
  switch (action.type) {
    case 'edit': {
      const result = action.edit(state.doc, state.positions);
      if (!result) return state;
      return {
        doc: result.doc, positions: result.positions ?? state.positions,
        past: [...state.past, { doc: state.doc, positions: state.positions }].slice(-200), future: [],
      };
    }
    case 'load': return { doc: action.doc, positions: action.positions ?? {}, past: [], future: [] };
    case 'move': return { ...state, positions: { ...state.positions, ...action.positions } };
    case 'undo': {
      const prev = state.past.at(-1);
      if (!prev) return state;
      return { ...prev, past: state.past.slice(0, -1), future: [...state.future, { doc: state.doc, positions: state.positions }] };
    }
    case 'redo': {
      const next = state.future.at(-1);
      if (!next) return state;
      return { ...next, past: [...state.past, { doc: state.doc, positions: state.positions }], future: state.future.slice(0, -1) };
    }
    default: throw new Error(`unknown action ${action.type}`);
  }
}

/** Edits of a workflow document: each returns {doc, positions?} or null for "no change". */
export const edits = {
  addStep: (id, type, position) => (doc, positions) => {
    if (doc.steps?.some((s) => s.id === id)) return null;
    const next = clone(doc);
    next.steps = [...(next.steps ?? []), { id, activity: type, inputs: {} }];
    next.layout = { ...(next.layout ?? {}), [id]: { x: Math.round(position.x), y: Math.round(position.y) } };
    return { doc: next, positions: { ...positions, [id]: position } };
  },
  connect: (target, port, reference, isList) => (doc) => {
    const next = clone(doc);
    const step = next.steps.find((s) => s.id === target);
    step.inputs ??= {};
    step.inputs[port] = isList ? [...(Array.isArray(step.inputs[port]) ? step.inputs[port] : []), reference] : reference;
    return { doc: next };
  },
  deleteEdges: (removed) => (doc) => {
    const next = clone(doc);
    for (const e of removed) {
      const step = next.steps.find((s) => s.id === e.target);
      const v = step?.inputs?.[e.targetHandle];
      if (Array.isArray(v)) step.inputs[e.targetHandle] = v.filter((r) => r.from !== `${e.source}.${e.sourceHandle}`);
      else if (step) delete step.inputs[e.targetHandle];
    }
    return { doc: next };
  },
  deleteSteps: (ids) => (doc) => {
    const next = clone(doc);
    next.steps = next.steps.filter((s) => !ids.has(s.id));
    for (const s of next.steps) {
      for (const [port, v] of Object.entries(s.inputs ?? {})) if (refs(v).some(([from]) => ids.has(from))) delete s.inputs[port];
    }
    if (next.layout) for (const id of ids) delete next.layout[id];
    return { doc: next };
  },
  place: (id, position) => (doc, positions) => {
    const next = clone(doc);
    next.layout = { ...(next.layout ?? {}), [id]: { x: Math.round(position.x), y: Math.round(position.y) } };
    return { doc: next, positions: { ...positions, [id]: position } };
  },
  layoutAll: (layout) => (doc) => ({ doc: { ...clone(doc), layout }, positions: layout }),
  setInput: (stepId, port, value) => (doc) => {
    const next = clone(doc);
    const step = next.steps.find((s) => s.id === stepId);
    step.inputs ??= {};
    if (value === undefined) delete step.inputs[port]; else step.inputs[port] = value;
    return { doc: next };
  },
  renameStep: (stepId, id) => (doc, positions) => {
    if (!id || doc.steps.some((s) => s.id === id)) return null;
    const next = clone(doc);
    for (const s of next.steps) {
      if (s.id === stepId) s.id = id;
      for (const [port, v] of Object.entries(s.inputs ?? {})) {
        const fix = (r) => (r && typeof r === 'object' && typeof r.from === 'string' && r.from.startsWith(`${stepId}.`) ? { ...r, from: `${id}.${r.from.slice(stepId.length + 1)}` } : r);
        s.inputs[port] = Array.isArray(v) ? v.map(fix) : fix(v);
      }
    }
    if (next.layout?.[stepId]) { next.layout[id] = next.layout[stepId]; delete next.layout[stepId]; }
    return { doc: next, positions: { ...positions, [id]: positions[stepId] } };
  },
  setName: (name) => (doc) => (doc.name === name ? null : { doc: { ...clone(doc), name } }),
  setDescription: (description) => (doc) => {
    const next = clone(doc);
    if (description === undefined) delete next.description; else next.description = description;
    return { doc: next };
  },
  setParameter: (name, definition) => (doc) => {
    const next = clone(doc);
    next.parameters = { ...(next.parameters ?? {}), [name]: definition };
    return { doc: next };
  },
  /** Removes a parameter; fields bound to it take its default as a literal (or are cleared). */
  removeParameter: (name) => (doc) => {
    const next = clone(doc);
    const fallback = next.parameters?.[name]?.default;
    delete next.parameters?.[name];
    if (next.parameters && Object.keys(next.parameters).length === 0) delete next.parameters;
    for (const s of next.steps ?? []) {
      for (const [port, v] of Object.entries(s.inputs ?? {})) {
        if (v && typeof v === 'object' && v.param === name) { if (fallback === undefined) delete s.inputs[port]; else s.inputs[port] = fallback; }
      }
    }
    return { doc: next };
  },
  renameParameter: (name, to) => (doc) => {
    if (!to || doc.parameters?.[to]) return null;
    const next = clone(doc);
    next.parameters = Object.fromEntries(Object.entries(next.parameters ?? {}).map(([k, v]) => [k === name ? to : k, v]));
    for (const s of next.steps ?? []) {
      for (const [port, v] of Object.entries(s.inputs ?? {})) if (v && typeof v === 'object' && v.param === name) s.inputs[port] = { ...v, param: to };
    }
    return { doc: next };
  },
  paste: (copied, id) => (doc, positions) => {
    if (doc.steps?.some((s) => s.id === id)) return null;
    const copy = clone(copied);
    copy.id = id;
    const base = positions[copied.id] ?? { x: 0, y: 0 };
    const at = { x: base.x + 40, y: base.y + 40 };
    const next = clone(doc);
    next.steps.push(copy);
    next.layout = { ...(next.layout ?? {}), [copy.id]: at };
    return { doc: next, positions: { ...positions, [copy.id]: at } };
  },
};

/** The store as a hook: state plus stable dispatchers. */
export function useDocumentStore() {
  const [state, dispatch] = useReducer(reducer, initial);
  const edit = useCallback((fn) => dispatch({ type: 'edit', edit: fn }), []);
  const actions = useMemo(() => ({
    edit,
    load: (doc, positions) => dispatch({ type: 'load', doc, positions }),
    move: (positions) => dispatch({ type: 'move', positions }),
    undo: () => dispatch({ type: 'undo' }),
    redo: () => dispatch({ type: 'redo' }),
  }), [edit]);
  return [state, actions];
}
