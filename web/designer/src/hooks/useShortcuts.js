// Keyboard shortcuts, registered once: the handler reads the latest callbacks through a ref. The list is shown in the
// shortcuts dialog (press ?), so what is bound and what is documented are the same table.
import { useEffect, useRef } from 'react';

export const shortcutList = [
  ['Ctrl+S', 'Save'], ['Ctrl+Enter', 'Run (opens the parameters dialog)'], ['Ctrl+Z', 'Undo'], ['Ctrl+Shift+Z / Ctrl+Y', 'Redo'],
  ['Ctrl+C / Ctrl+V', 'Copy / paste the selected step'], ['Delete / Backspace', 'Delete the selected step or connection'],
  ['L', 'Auto-layout'], ['?', 'This list'], ['Esc', 'Close a dialog or viewer'],
];

/** bindings: { 'mod+z': fn, 'mod+shift+z': fn, ... } (mod is Ctrl or Cmd); ignored while typing in a field. */
export function useShortcuts(bindings) {
  const latest = useRef(bindings);
  latest.current = bindings;
  useEffect(() => {
    const onKey = (e) => {
      const typing = e.target.closest?.('input, textarea, select, [contenteditable]');
      const mod = e.ctrlKey || e.metaKey;
      if (typing && !mod) return;
      const key = e.key === '?' ? '?' : e.key.toLowerCase();
      const combo = `${mod ? 'mod+' : ''}${e.shiftKey && key !== '?' ? 'shift+' : ''}${key}`;
      const handler = latest.current[combo];
      if (handler && (!typing || combo === 'mod+s' || combo === 'mod+enter')) { e.preventDefault(); handler(); }
    };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, []);
}
