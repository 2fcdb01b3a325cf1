import { randomBytes } from 'node:crypto';
import { isIPv4 } from 'node:net';
import { guestText } from '../core/agent-proto.js';
import { BangerError, ErrorCode, errorMessage } from '../core/errors.js';
import type { AgentConnection } from './agent-session.js';

/**
 * What makes a guest itself. A VM restored from a memory snapshot starts with the snapshot's
 * identity; applyIdentity gives it its own (docs/agent.md, "Identity after a restore").
 */
export interface GuestIdentity {
  mac: string;
  ip: string;
  prefixLen: number;
  gateway: string;
  hostname: string;
  machineId: string;
  hostKey: { privatePem: string; publicLine: string };
}

/** Bytes of host randomness mixed into the guest's pool (the agent takes 32..512). */
export const IDENTITY_SEED_BYTES = 64;

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const HOSTNAME = /^(?=.{1,63}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/;
const MACHINE_ID = /^(?!0{32})[0-9a-f]{32}$/;
const PRIVATE_KEY = /^-----BEGIN OPENSSH PRIVATE KEY-----\n[A-Za-z0-9+/=\n]+-----END OPENSSH PRIVATE KEY-----\n$/;
const PUBLIC_LINE = /^ssh-ed25519 [A-Za-z0-9+/=]{16,}( [\x20-\x7e]*)?$/;

function ipv4(s: string): number {
  return s.split('.').reduce((n, o) => n * 256 + Number(o), 0);
}

/**
 * Checks an identity before it is sent (the agent checks the same again: identity.c). Throws
 * E_INVALID naming the field. The MAC must be unicast and not zero, the gateway inside
 * ip/prefixLen (8..30) and not the IP, the IP neither the network nor the broadcast address.
 */
export function validateIdentity(id: GuestIdentity): void {
  const bad = (field: string, why: string): never => {
    throw new BangerError(ErrorCode.Invalid, `guest identity: ${field} ${why}`);
  };
  if (typeof id.mac !== 'string' || !MAC.test(id.mac)) bad('mac', 'must be six lowercase hex octets separated by ":"');
  const first = parseInt(id.mac.slice(0, 2), 16);
  if (first & 1) bad('mac', 'must be a unicast address');
  if (/^00(:00){5}$/.test(id.mac)) bad('mac', 'must not be all zeros');
  if (typeof id.ip !== 'string' || !isIPv4(id.ip)) bad('ip', 'must be a dotted IPv4 address');
  if (typeof id.gateway !== 'string' || !isIPv4(id.gateway)) bad('gateway', 'must be a dotted IPv4 address');
  if (!Number.isInteger(id.prefixLen) || id.prefixLen < 8 || id.prefixLen > 30) bad('prefixLen', 'must be an integer 8..30');
  const hostBits = 2 ** (32 - id.prefixLen);
  const ip = ipv4(id.ip);
  const gw = ipv4(id.gateway);
  if (Math.floor(ip / hostBits) !== Math.floor(gw / hostBits)) bad('gateway', `is not inside ${id.ip}/${id.prefixLen}`);
  if (ip === gw) bad('gateway', 'is the same address as ip');
  if (ip % hostBits === 0 || ip % hostBits === hostBits - 1) bad('ip', `is the network or broadcast address of /${id.prefixLen}`);
  if (typeof id.hostname !== 'string' || !HOSTNAME.test(id.hostname)) bad('hostname', 'must be at most 63 letters, digits, "-" and "." (RFC 1123 labels)');
  if (typeof id.machineId !== 'string' || !MACHINE_ID.test(id.machineId)) bad('machineId', 'must be 32 lowercase hex digits, not all zeros');
  const k = id.hostKey;
  if (!k || typeof k.privatePem !== 'string' || k.privatePem.length > 8192 || !PRIVATE_KEY.test(k.privatePem))
    bad('hostKey.privatePem', 'must be an OpenSSH private key (PEM armour, newline-terminated, at most 8 KiB)');
  if (typeof k.publicLine !== 'string' || k.publicLine.length > 1024 || !PUBLIC_LINE.test(k.publicLine.trim()))
    bad('hostKey.publicLine', 'must be one ssh-ed25519 public key line');
}

/** The agent request for `id` (exported for tests). */
export function identityRequest(id: GuestIdentity, seed: Buffer, unixMs: number): Record<string, unknown> {
  return {
    op: 'identity',
    mac: id.mac,
    ip: id.ip,
    prefixLen: id.prefixLen,
    gateway: id.gateway,
    hostname: id.hostname,
    machineId: id.machineId,
    seed: seed.toString('hex'),
    hostKey: id.hostKey.privatePem,
    hostKeyPub: id.hostKey.publicLine.trim(),
    unixMs,
  };
}

/**
 * Gives the guest behind `conn` the identity `id` (agent request `identity`, agent version 4):
 * a fresh RNG seed from the host (crypto.randomBytes), the host's clock, hostname (and
 * /etc/hostname, /etc/hosts), /etc/machine-id, the SSH host key (sshd reloaded with SIGHUP),
 * then eth0's MAC, IPv4 address and default route and a gratuitous ARP. Resolves once the agent
 * reports all of it done.
 *
 * Throws E_INVALID (bad `id`, nothing sent), E_TIMEOUT (no answer within `o.timeoutMs`: the guest
 * may be half-changed), or E_AGENT naming the part that failed (details.step: validate, seed,
 * clock, hostname, hosts, machine-id, ssh-keys, mac, address, route, arp; or `unsupported` for
 * an agent older than version 4). After a failure the guest's identity is partly applied: the
 * caller must not hand the VM out.
 */
export async function applyIdentity(conn: AgentConnection, id: GuestIdentity, o: { timeoutMs: number }): Promise<void> {
  validateIdentity(id);
  const seed = randomBytes(IDENTITY_SEED_BYTES);
  let reply: Record<string, unknown>;
  try {
    reply = await conn.request(identityRequest(id, seed, Date.now()), o.timeoutMs);
  } catch (e) {
    if (e instanceof BangerError) throw new BangerError(e.code, `guest identity: ${e.message}`, { cause: e, details: { step: 'request' } });
    throw new BangerError(ErrorCode.Agent, `guest identity: ${errorMessage(e)}`, { cause: e, details: { step: 'request' } });
  } finally {
    seed.fill(0);
  }
  if (reply.ok === true) return;
  const error = guestText(String(reply.error ?? 'refused'), 512);
  if (error === 'unknown op')
    throw new BangerError(ErrorCode.Agent, `guest identity: the guest agent (version ${guestText(String(conn.info.version ?? '?'), 16)}) predates 'identity'`, {
      hint: 'the image carries an agent older than version 4; re-prepare or re-pull the image so its agent can take a new identity',
      details: { step: 'unsupported' },
    });
  const step = typeof reply.step === 'string' && /^[a-z-]{1,16}$/.test(reply.step) ? reply.step : 'unknown';
  throw new BangerError(ErrorCode.Agent, `guest identity failed at ${step}: ${error}`, { details: { step } });
}
