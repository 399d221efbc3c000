// Crawl results (topics.jsonl): a filterable table of discovered topics (text search, refused only, heads only,
// language), sortable by any column.
import { useMemo, useState } from 'react';
import Table from './Table.jsx';
import { num } from '../format.js';

const columns = ['id', 'step', 'text', 'language', 'isRefused', 'refusalRate', 'clusterId', 'parentId', 'isHead'];

export default function TopicsTable({ rows }) {
  const [query, setQuery] = useState('');
  const [refused, setRefused] = useState(false);
  const [heads, setHeads] = useState(false);
  const [language, setLanguage] = useState('');
  const languages = useMemo(() => [...new Set(rows.map((r) => r.language).filter(Boolean))].sort(), [rows]);
  const shown = useMemo(() => {
    const q = query.trim().toLowerCase();
    return rows.filter((r) => (!refused || r.isRefused) && (!heads || r.isHead) && (!language || r.language === language)
      && (!q || `${r.text ?? ''} ${r.normalized ?? ''}`.toLowerCase().includes(q)));
  }, [rows, query, refused, heads, language]);
  const refusedCount = rows.filter((r) => r.isRefused).length;
  return (
    <div className="topics" data-testid="topics-view">
      <div className="filters">
        <input placeholder="Search topics" value={query} onChange={(e) => setQuery(e.target.value)} data-testid="topics-search" />
        <label><input type="checkbox" checked={refused} onChange={(e) => setRefused(e.target.checked)} data-testid="filter-refused" /> refused only</label>
        <label><input type="checkbox" checked={heads} onChange={(e) => setHeads(e.target.checked)} /> cluster heads only</label>
        <select value={language} onChange={(e) => setLanguage(e.target.value)} aria-label="language">
          <option value="">all languages</option>
          {languages.map((l) => <option key={l}>{l}</option>)}
        </select>
        <span data-testid="topics-count">{shown.length} of {rows.length} topics · {refusedCount} refused</span>
      </div>
      <Table rows={shown} columns={columns.filter((c) => rows.some((r) => r[c] !== undefined))} testId="topics-table"
        render={{ isRefused: (v) => (v ? <span className="pill s-failed">refused</span> : ''), refusalRate: (v) => (v == null ? '' : num(v)) }} />
    </div>
  );
}
