// A sortable, paged table of rows (objects): datasets and topics share it. Click a header to sort (again: reverse).
import { useMemo, useState } from 'react';
import { ArrowDown, ArrowUp, ChevronLeft, ChevronRight } from 'lucide-react';
import { num } from '../format.js';

const cell = (v) => (v == null ? '' : typeof v === 'number' ? num(v) : typeof v === 'object' ? JSON.stringify(v) : String(v));

export default function Table({ rows, columns, pageSize = 50, testId = 'table', render = {} }) {
  const [sort, setSort] = useState(null); // {column, dir}
  const [page, setPage] = useState(0);
  const sorted = useMemo(() => {
    if (!sort) return rows;
    const { column, dir } = sort;
    return [...rows].sort((a, b) => {
      const x = a[column], y = b[column];
      if (x == null && y == null) return 0;
      if (x == null) return 1;
      if (y == null) return -1;
      const c = typeof x === 'number' && typeof y === 'number' ? x - y : String(cell(x)).localeCompare(String(cell(y)), undefined, { numeric: true });
      return dir * c;
    });
  }, [rows, sort]);
  const pages = Math.max(1, Math.ceil(sorted.length / pageSize));
  const at = Math.min(page, pages - 1);
  const shown = sorted.slice(at * pageSize, (at + 1) * pageSize);
  const toggle = (column) => { setSort((s) => (s?.column === column ? { column, dir: -s.dir } : { column, dir: 1 })); setPage(0); };
  return (
    <div className="table-view" data-testid={testId}>
      <div className="table-scroll">
        <table>
          <thead>
            <tr>{columns.map((c) => (
              <th key={c} onClick={() => toggle(c)} data-testid={`sort-${c}`} aria-sort={sort?.column === c ? (sort.dir > 0 ? 'ascending' : 'descending') : 'none'}>
                {c} {sort?.column === c && (sort.dir > 0 ? <ArrowUp size={11} /> : <ArrowDown size={11} />)}
              </th>
            ))}</tr>
          </thead>
          <tbody>
            {shown.map((r, k) => <tr key={k}>{columns.map((c) => <td key={c} title={cell(r[c])}>{render[c] ? render[c](r[c], r) : cell(r[c])}</td>)}</tr>)}
          </tbody>
        </table>
      </div>
      <div className="pager">
        <button aria-label="previous page" data-testid="page-prev" disabled={at === 0} onClick={() => setPage(at - 1)}><ChevronLeft size={14} /></button>
        <span data-testid="page-info">page {at + 1} of {pages} · {rows.length.toLocaleString()} rows</span>
        <button aria-label="next page" data-testid="page-next" disabled={at >= pages - 1} onClick={() => setPage(at + 1)}><ChevronRight size={14} /></button>
      </div>
    </div>
  );
}

/** The columns of a list of rows: the keys of the first 500 rows, in first-seen order. */
export function columnsOf(rows) {
  const seen = new Set();
  for (const r of rows.slice(0, 500)) for (const k of Object.keys(r)) seen.add(k);
  return [...seen];
}
