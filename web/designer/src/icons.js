// The visual system's category icons and colours (lucide icons): the palette, the nodes and the legend use them.
import { Box, Braces, Brain, Database, Eraser, FileText, FlaskConical, Network, Radar, Sparkles } from 'lucide-react';

export const categories = {
  Data: { icon: Database, color: '#2f80ed' },
  Model: { icon: Brain, color: '#9b51e0' },
  Circuits: { icon: Network, color: '#eb5757' },
  Schemas: { icon: Braces, color: '#d4a72c' },
  Crawl: { icon: Radar, color: '#00a3a3' },
  Reports: { icon: FileText, color: '#27ae60' },
  Erasure: { icon: Eraser, color: '#e67e22' },
  Causal: { icon: FlaskConical, color: '#8e44ad' },
  Diffusion: { icon: Sparkles, color: '#d63384' },
};
export const categoryOf = (name) => categories[name] ?? { icon: Box, color: '#607080' };
