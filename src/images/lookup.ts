import type { ImageRecord } from './record.js';

/**
 * How vms reads images: through the images service, never the `images` table.
 * `ImageService` implements it; the daemon wiring passes it down.
 */
export interface ImageLookup {
  /** The image `name`. Throws E_NOT_FOUND (hint: see the image list) when there is none. */
  get(name: string): ImageRecord;
}

export type { ImageRecord };
