// The activity palette: activities grouped by category (with its icon and colour), filtered by a search, dragged
// onto the canvas.
import { useMemo, useState } from 'react';
import { Search } from 'lucide-react';
import { categoryOf } from '../icons.js';

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
      <div className="search"><Search size={14} /><input data-testid="search" placeholder="Search activities" value={search} onChange={(e) => setSearch(e.target.value)} /></div>
      {categories.map(([category, list]) => {
        const { icon: Icon, color } = categoryOf(category);
        return (
          <div key={category} className="category">
            <h4 style={{ color }}><Icon size={14} /> {category}</h4>
            {list.map((a) => (
              <div key={a.type} className="activity" draggable data-testid={`palette-${a.type}`} title={a.summary} style={{ borderLeftColor: color }}
                onDragStart={(e) => { e.dataTransfer.setData('application/pipelines-activity', a.type); e.dataTransfer.effectAllowed = 'move'; }}>
                <span className="activity-type">{a.type}</span>
                <span className="activity-summary">{a.summary}</span>
              </div>
            ))}
          </div>
        );
      })}
    </aside>
  );
}
