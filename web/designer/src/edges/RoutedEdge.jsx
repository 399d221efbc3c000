// An edge that never runs under a node: the usual S-curve when its way is clear, otherwise a detour along a lane
// above or below the nodes in the way (whichever bends less). The route is recomputed as nodes move.
import { BaseEdge, useNodes } from '@xyflow/react';

const PAD = 14;

function bezier(sx, sy, tx, ty) {
  const c = Math.max(40, Math.abs(tx - sx) / 2);
  return { d: `M${sx},${sy} C${sx + c},${sy} ${tx - c},${ty} ${tx},${ty}`, points: (t) => {
    const u = 1 - t;
    return [u ** 3 * sx + 3 * u * u * t * (sx + c) + 3 * u * t * t * (tx - c) + t ** 3 * tx, u ** 3 * sy + 3 * u * u * t * sy + 3 * u * t * t * ty + t ** 3 * ty];
  } };
}

const hits = (boxes, x, y) => boxes.some((b) => x > b.x0 && x < b.x1 && y > b.y0 && y < b.y1);

/** The route from (sx, sy) to (tx, ty) around the boxes (already padded): an SVG path. */
export function route(sx, sy, tx, ty, boxes) {
  const curve = bezier(sx, sy, tx, ty);
  const blocked = [];
  for (let k = 1; k < 60; k++) { const [x, y] = curve.points(k / 60); for (const b of boxes) if (x > b.x0 && x < b.x1 && y > b.y0 && y < b.y1 && !blocked.includes(b)) blocked.push(b); }
  if (blocked.length === 0 || tx - sx < 120) return curve.d;
  const x0 = sx + 40, x1 = tx - 40;
  const span = boxes.filter((b) => b.x1 > x0 && b.x0 < x1);
  const lane = (start, dir) => {
    let y = start;
    for (let guard = 0; guard < 50; guard++) {
      const inWay = span.find((b) => y > b.y0 && y < b.y1);
      if (!inWay) return y;
      y = dir < 0 ? inWay.y0 - 1 : inWay.y1 + 1;
    }
    return y;
  };
  const up = lane(Math.min(...blocked.map((b) => b.y0)) - 1, -1);
  const down = lane(Math.max(...blocked.map((b) => b.y1)) + 1, 1);
  const y = Math.abs(sy - up) + Math.abs(ty - up) <= Math.abs(sy - down) + Math.abs(ty - down) ? up : down;
  const r = 20;
  return `M${sx},${sy} C${sx + r},${sy} ${sx + r},${y} ${x0},${y} L${x1},${y} C${tx - r},${y} ${tx - r},${ty} ${tx},${ty}`;
}

export default function RoutedEdge({ id, source, target, sourceX, sourceY, targetX, targetY, style, markerEnd }) {
  const nodes = useNodes();
  const boxes = nodes.filter((n) => n.id !== source && n.id !== target && n.measured?.width).map((n) => ({
    x0: n.position.x - PAD, y0: n.position.y - PAD, x1: n.position.x + n.measured.width + PAD, y1: n.position.y + n.measured.height + PAD,
  }));
  return <BaseEdge id={id} path={route(sourceX, sourceY, targetX, targetY, boxes)} style={style} markerEnd={markerEnd} interactionWidth={14} />;
}

export { hits };
