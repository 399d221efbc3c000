// One dialog look for the whole page (Radix's accessible dialog: focus kept inside, Esc and the close button close it).
import * as D from '@radix-ui/react-dialog';
import { X } from 'lucide-react';

export default function Dialog({ open, onClose, title, description, children, footer, wide, testId }) {
  return (
    <D.Root open={open} onOpenChange={(o) => { if (!o) onClose(); }}>
      <D.Portal>
        <D.Overlay className="overlay" />
        <D.Content className={`dialog ${wide ? 'wide' : ''}`} data-testid={testId} aria-describedby={undefined}>
          <div className="dialog-head">
            <D.Title className="dialog-title">{title}</D.Title>
            <D.Close className="icon-button" aria-label="Close" data-testid="dialog-close"><X size={16} /></D.Close>
          </div>
          {description && <D.Description className="dialog-description">{description}</D.Description>}
          <div className="dialog-body">{children}</div>
          {footer && <div className="dialog-foot">{footer}</div>}
        </D.Content>
      </D.Portal>
    </D.Root>
  );
}
