import type { Context } from '../daemon/context.js';

/** Network: bridge, taps, IP leases, NAT. (placeholder) */
export class NetworkService {
  constructor(readonly ctx: Context) {}
}
