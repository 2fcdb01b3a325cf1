import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { BangerError } from '../../src/core/errors.js';
import type { AgentConnection } from '../../src/vms/agent-session.js';
import { applyIdentity, IDENTITY_SEED_BYTES, validateIdentity, type GuestIdentity } from '../../src/vms/identity.js';

/** An OpenSSH-armoured private key body (the validator checks the armour and alphabet only). */
const PEM = `-----BEGIN OPENSSH PRIVATE KEY-----\n${'b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n'.repeat(5)}-----END OPENSSH PRIVATE KEY-----\n`;
const PUB = `ssh-ed25519 ${generateKeyPairSync('ed25519').publicKey.export({ format: 'der', type: 'spki' }).toString('base64')} vm-host`;

const good = (): GuestIdentity => ({
  mac: '02:aa:bb:cc:dd:01',
  ip: '172.16.0.7',
  prefixLen: 24,
  gateway: '172.16.0.1',
  hostname: 'box-2',
  machineId: '0123456789abcdef0123456789abcdef',
  hostKey: { privatePem: PEM, publicLine: PUB },
});

test('validateIdentity: accepts a good identity and refuses each bad field by name', () => {
  validateIdentity(good());
  const cases: Array<[string, (id: GuestIdentity) => void]> = [
    ['mac', (id) => (id.mac = '02:AA:BB:CC:DD:01')],
    ['mac', (id) => (id.mac = '02:aa:bb:cc:dd')],
    ['mac', (id) => (id.mac = '03:aa:bb:cc:dd:01')], // multicast
    ['mac', (id) => (id.mac = '00:00:00:00:00:00')],
    ['ip', (id) => (id.ip = '172.16.0.300')],
    ['ip', (id) => (id.ip = '172.16.0.0')], // network address
    ['ip', (id) => (id.ip = '172.16.0.255')], // broadcast
    ['gateway', (id) => (id.gateway = '10.0.0.1')], // outside the prefix
    ['gateway', (id) => (id.gateway = id.ip)],
    ['gateway', (id) => (id.gateway = 'gw')],
    ['prefixLen', (id) => (id.prefixLen = 31)],
    ['prefixLen', (id) => (id.prefixLen = 24.5)],
    ['prefixLen', (id) => (id.prefixLen = 7)],
    ['hostname', (id) => (id.hostname = '')],
    ['hostname', (id) => (id.hostname = 'a'.repeat(64))],
    ['hostname', (id) => (id.hostname = 'box;reboot')],
    ['hostname', (id) => (id.hostname = '-box')],
    ['hostname', (id) => (id.hostname = 'box-')],
    ['hostname', (id) => (id.hostname = 'a..b')],
    ['machineId', (id) => (id.machineId = '0'.repeat(32))],
    ['machineId', (id) => (id.machineId = 'ABCDEF0123456789ABCDEF0123456789')],
    ['machineId', (id) => (id.machineId = '0123')],
    ['hostKey.privatePem', (id) => (id.hostKey.privatePem = PEM.replace('OPENSSH ', 'RSA '))],
    ['hostKey.privatePem', (id) => (id.hostKey.privatePem = PEM.trimEnd())],
    ['hostKey.privatePem', (id) => (id.hostKey.privatePem = PEM.replace('b3Blb', 'b3"lb'))],
    ['hostKey.privatePem', (id) => (id.hostKey.privatePem = PEM.replace('-----END', 'A'.repeat(9000) + '\n-----END'))],
    ['hostKey.publicLine', (id) => (id.hostKey.publicLine = PUB.replace('ssh-ed25519', 'ssh-rsa'))],
    ['hostKey.publicLine', (id) => (id.hostKey.publicLine = PUB + '\nssh-ed25519 AAAA')],
    ['hostKey.publicLine', (id) => (id.hostKey.publicLine = 'ssh-ed25519 ')],
  ];
  for (const [field, spoil] of cases) {
    const id = good();
    id.hostKey = { ...id.hostKey };
    spoil(id);
    assert.throws(
      () => validateIdentity(id),
      (e: unknown) => e instanceof BangerError && e.code === 'E_INVALID' && e.message.startsWith(`guest identity: ${field} `),
      `${field}: ${JSON.stringify(id).slice(0, 120)}`,
    );
  }
});

function fakeConn(reply: Record<string, unknown> | Error, info: Record<string, unknown> = { version: '4' }) {
  const sent: Array<{ req: Record<string, unknown>; timeoutMs?: number }> = [];
  const conn = {
    info,
    request: async (req: Record<string, unknown>, timeoutMs?: number) => {
      sent.push({ req, timeoutMs });
      if (reply instanceof Error) throw reply;
      return reply;
    },
  };
  return { conn: conn as unknown as AgentConnection, sent };
}

test('applyIdentity: sends one identity request with a fresh random seed and the host clock; nothing is sent for an invalid identity', async () => {
  const { conn, sent } = fakeConn({ ok: true, clockStepMs: 12, sshd: 1 });
  const t0 = Date.now();
  await applyIdentity(conn, good(), { timeoutMs: 1234 });
  await applyIdentity(conn, good(), { timeoutMs: 1234 });
  assert.equal(sent.length, 2);
  const { req, timeoutMs } = sent[0]!;
  assert.equal(timeoutMs, 1234);
  assert.deepEqual(Object.keys(req).sort(), ['gateway', 'hostKey', 'hostKeyPub', 'hostname', 'ip', 'mac', 'machineId', 'op', 'prefixLen', 'seed', 'unixMs']);
  assert.equal(req.op, 'identity');
  assert.equal(req.hostKey, PEM);
  assert.equal(req.hostKeyPub, PUB);
  assert.match(String(req.seed), new RegExp(`^[0-9a-f]{${IDENTITY_SEED_BYTES * 2}}$`));
  assert.notEqual(req.seed, sent[1]!.req.seed, 'each call sends a fresh seed');
  assert.ok(Number(req.unixMs) >= t0 && Number(req.unixMs) <= Date.now());

  const bad = good();
  bad.mac = 'nope';
  await assert.rejects(applyIdentity(conn, bad, { timeoutMs: 1000 }), { code: 'E_INVALID' });
  assert.equal(sent.length, 2, 'an invalid identity never reaches the agent');
});

test('applyIdentity: names the failed step; an old agent is told apart; transport errors keep their code', async () => {
  await assert.rejects(
    applyIdentity(fakeConn({ ok: false, step: 'route', error: 'identity: route: default via 10.0.0.1: Network is unreachable' }).conn, good(), {
      timeoutMs: 1000,
    }),
    (e: unknown) => e instanceof BangerError && e.code === 'E_AGENT' && e.details?.step === 'route' && /failed at route: .*unreachable/.test(e.message),
  );
  await assert.rejects(
    applyIdentity(fakeConn({ ok: false, step: '<script>\n', error: 'x' }).conn, good(), { timeoutMs: 1000 }),
    (e: unknown) => e instanceof BangerError && e.details?.step === 'unknown',
  );
  await assert.rejects(
    applyIdentity(fakeConn({ ok: false, error: 'unknown op' }, { version: '3' }).conn, good(), { timeoutMs: 1000 }),
    (e: unknown) =>
      e instanceof BangerError && e.code === 'E_AGENT' && e.details?.step === 'unsupported' && /version 3\) predates 'identity'/.test(e.message) && !!e.hint,
  );
  await assert.rejects(
    applyIdentity(fakeConn(new BangerError('E_TIMEOUT', "no reply to 'identity' within 1000 ms")).conn, good(), { timeoutMs: 1000 }),
    (e: unknown) => e instanceof BangerError && e.code === 'E_TIMEOUT' && e.details?.step === 'request',
  );
});
