// Keyboard shortcuts, registered once: the handler reads the latest callbacks through a ref.
import { useEffect, useRef } from 'react';

/** bindings: { 'mod+z': fn, 'mod+shift+z': fn, ... } (mod is Ctrl or Cmd); ignored while typing in a field. */
export function useShortcuts(bindings) {
  const latest = useRef(bindings);
  latest.current = bindings;
  useEffect(() => {
    const onKey = (e) => {
      if (e.target.closest?.('input, textarea, select')) return;
      const mod = e.ctrlKey || e.metaKey;
      const combo = `${mod ? 'mod+' : ''}${e.shiftKey ? 'shift+' : ''}${e.key.toLowerCase()}`;
      const handler = latest.current[combo];
      if (handler) { e.preventDefault(); handler(); }
    };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, []);
}
