import { guestText } from '../core/agent-proto.js';
import { errorMessage } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import type { AgentConnection } from './agent-session.js';

/** A later contact sets the guest's clock again when the last set is older than this. */
export const CLOCK_RESYNC_MS = 60_000;
/** How long the agent has to answer set-clock (nothing waits on it). */
const CLOCK_REPLY_MS = 5000;

interface ClockState {
  /** When the last answered set-clock was sent (ms, host clock); -Infinity before the first. */
  at: number;
  inFlight: boolean;
  /** The agent predates set-clock ('unknown op'): not asked again on this connection. */
  unsupported: boolean;
}
const states = new WeakMap<AgentConnection, ClockState>();

/**
 * Sets the guest's wall clock from the host's (agent request `set-clock`, agent version 3):
 * on a connection's first use and again on a later contact once CLOCK_RESYNC_MS passed. The
 * request goes out before whatever the caller sends next on `conn`, and the agent handles
 * frames in order, so a command started right after already sees the host's time.
 *
 * Never fails and never waits: an older agent answers 'unknown op' (the clock is then simply
 * not set: logged at debug, not asked again on this connection); any other refusal or a
 * timeout is logged at debug and retried on a later contact.
 */
export function syncGuestClock(conn: AgentConnection, log: Logger, now: () => number = Date.now): void {
  let s = states.get(conn);
  if (!s) states.set(conn, (s = { at: -Infinity, inFlight: false, unsupported: false }));
  const st = s;
  if (conn.closed || st.unsupported || st.inFlight || now() - st.at < CLOCK_RESYNC_MS) return;
  st.inFlight = true;
  const sent = now();
  let reply: Promise<Record<string, unknown>>;
  try {
    reply = conn.request({ op: 'set-clock', unixMs: sent }, CLOCK_REPLY_MS);
  } catch (e) {
    st.inFlight = false;
    log.debug('guest clock not set', { agent: conn.label, error: errorMessage(e) });
    return;
  }
  reply.then(
    (r) => {
      st.inFlight = false;
      st.at = sent;
      if (r.ok === true) {
        const step = typeof r.stepMs === 'number' ? r.stepMs : undefined;
        const level = step !== undefined && Math.abs(step) >= 1000 ? 'info' : 'debug';
        log[level]('guest clock set from the host', { agent: conn.label, stepMs: step });
        return;
      }
      const error = guestText(String(r.error ?? 'refused'), 256);
      if (error === 'unknown op') st.unsupported = true;
      log.debug('guest clock not set', { agent: conn.label, error: st.unsupported ? 'the agent predates set-clock (unknown op)' : error });
    },
    (e) => {
      st.inFlight = false;
      log.debug('guest clock not set', { agent: conn.label, error: errorMessage(e) });
    },
  );
}
