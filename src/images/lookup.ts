import type { PreparedImages } from './prepared.js';
import type { ImageRecord } from './record.js';

/**
 * How vms reads images: through the images service, never the `images` table.
 * `ImageService` implements it; the daemon wiring passes it down.
 */
export interface ImageLookup {
  /** The image `name`. Throws E_NOT_FOUND (hint: see the image list) when there is none. */
  get(name: string): ImageRecord;
  /** Images' prepared disks (prepared.ts): vms/prepare.ts reads and records them. */
  readonly prepared: PreparedImages;
}

export type { ImageRecord };
