// Images side by side with captions: a step's figures, a directory of images, and later diffusion grids and DT
// strips. Click an image to see it full size.
import { useState } from 'react';

export default function ImageGrid({ items }) {
  const [big, setBig] = useState(null);
  if (big) {
    return (
      <div className="image-big" data-testid="image-big">
        <button onClick={() => setBig(null)}>Back to the grid</button>
        <img src={big.src} alt={big.caption} />
      </div>
    );
  }
  return (
    <div className="image-grid" data-testid="image-grid">
      {items.map((it) => (
        <figure key={it.src}>
          <img src={it.src} alt={it.caption} onClick={() => setBig(it)} />
          <figcaption>{it.caption}</figcaption>
        </figure>
      ))}
    </div>
  );
}
