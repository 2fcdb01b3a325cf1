/**
 * Images use the one content store of the root (`src/core/content-store.ts`): configs and
 * layers land there verified, under the per-digest lock every service shares.
 */
export { ContentStore as BlobStore, BlobWriter } from '../core/content-store.js';
