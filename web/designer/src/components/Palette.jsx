// The activity palette: activities grouped by category, filtered by a search, dragged onto the canvas.
import { useMemo, useState } from 'react';

export default function Palette({ activities }) {
  const [search, setSearch] = useState('');
  const categories = useMemo(() => {
    const q = search.trim().toLowerCase();
    const groups = {};
    for (const a of activities) {
      if (q && !`${a.type} ${a.summary} ${a.category}`.toLowerCase().includes(q)) continue;
      (groups[a.category] ??= []).push(a);
    }
    return Object.entries(groups).sort(([a], [b]) => a.localeCompare(b));
  }, [activities, search]);
  return (
    <aside className="palette">
      <input data-testid="search" placeholder="Search activities" value={search} onChange={(e) => setSearch(e.target.value)} />
      {categories.map(([category, list]) => (
        <div key={category} className="category">
          <h4>{category}</h4>
          {list.map((a) => (
            <div key={a.type} className="activity" draggable data-testid={`palette-${a.type}`} title={a.summary}
              onDragStart={(e) => { e.dataTransfer.setData('application/pipelines-activity', a.type); e.dataTransfer.effectAllowed = 'move'; }}>
              {a.type}
            </div>
          ))}
        </div>
      ))}
    </aside>
  );
}
