import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { constants, existsSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Exec } from '../../src/core/exec.js';
import { defaultSources } from '../../src/guest/inject.js';
import { agentPool, connectUnix } from '../../src/vms/agent.js';
import { initScriptStep, type ExtrasDeps } from '../../src/vms/create-extras.js';
import type { SshPaths } from '../../src/vms/ssh.js';
import type { VmRecord } from '../../src/vms/store.js';
import { isRoot } from '../helpers/daemon.js';

/**
 * step init-script through the guest agent's exec (protocol 2), with SSH as the fallback. The
 * real C agent runs here in its own mount namespace where /run is a tmpfs and /dev/console is a
 * FIFO this test reads (so the guest side, INIT_REMOTE, writes its console lines there and its
 * 0700 script under that /run, touching nothing of the host's). SSH is a recording Exec.
 * (test/e2e/vm-publish.test.ts runs --init-script against a real guest.)
 */
const AGENT = defaultSources().agentPath;
const skip = !isRoot() ? 'needs root (mount namespace)' : existsSync(AGENT) ? undefined : 'agent not built (npm run build)';
let dir = '';
let agent: ChildProcess | undefined;
let sock = '';
let consoleFile = '';
let consoleText = '';
let consoleReader: Socket | undefined;
const sshCalls: string[][] = [];
const vm = { id: 'id-v', name: 'v', vmm: 'qemu', ip: '10.0.0.2' } as unknown as VmRecord;
const fakeExec = (async (argv: string[]) => (sshCalls.push(argv), { exitCode: 0, stdout: 'via ssh\n', stderr: '' })) as unknown as Exec;
const deps = (agentSock: string): ExtrasDeps => ({
  ctx: { exec: fakeExec },
  ssh: {} as SshPaths,
  driver: () => ({ openAgentStream: () => connectUnix(agentSock) as never }),
  handle: (v) => ({ id: v.id, name: v.name }) as never,
});
/** Wait until the guest console (the FIFO) shows `re`: the event itself, not a fixed sleep. */
async function consoleShows(re: RegExp, ms = 20_000): Promise<string> {
  for (const deadline = Date.now() + ms; !re.test(consoleText); await new Promise((r) => setTimeout(r, 20))) {
    if (Date.now() > deadline) assert.fail(`console never showed ${re}: ${JSON.stringify(consoleText)}`);
  }
  return consoleText;
}
/** Wait until `check` holds (polled), failing with `what` after `ms`. */
async function until(check: () => boolean, what: string, ms = 20_000): Promise<void> {
  for (const deadline = Date.now() + ms; !check(); await new Promise((r) => setTimeout(r, 20))) {
    if (Date.now() > deadline) assert.fail(what);
  }
}
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

function stages(): { log: string[]; stage: (name: string, msg?: string, done?: boolean) => void } {
  const log: string[] = [];
  return { log, stage: (name, msg, done) => log.push(`${name}${done ? ' done' : ''}${msg ? `: ${msg}` : ''}`) };
}

before(async () => {
  if (skip) return;
  dir = mkdtempSync(join(tmpdir(), 'banger-init-agent-'));
  sock = join(dir, 'agent.sock');
  consoleFile = join(dir, 'console');
  assert.equal(spawnSync('mkfifo', [consoleFile]).status, 0);
  // O_RDWR: a reader is always there (writers never block) and it never sees EOF
  consoleReader = new Socket({ fd: openSync(consoleFile, constants.O_RDWR | constants.O_NONBLOCK), readable: true, writable: false });
  consoleReader.on('data', (d) => (consoleText += d));
  agent = spawn(
    'unshare',
    [
      '-m',
      '--propagation',
      'private',
      'sh',
      '-c',
      'mount -t tmpfs tmpfs /run && mount --bind "$1" /dev/console && exec "$2" --unix "$3"',
      'sh',
      consoleFile,
      AGENT,
      sock,
    ],
    { stdio: 'ignore' },
  );
  for (let i = 0; i < 200 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 20));
  assert.ok(existsSync(sock), 'agent socket');
});
after(() => {
  agentPool.closeAll();
  agent?.kill('SIGKILL');
  consoleReader?.destroy();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('init script through the agent: runs as root, stdin is the script, lines on the console, ssh not used', { skip }, async () => {
  const s = stages();
  sshCalls.length = 0;
  consoleText = '';
  const script = Buffer.from('#!/bin/sh\necho "hello as $(id -un)"\necho "to stderr" >&2\nread x || echo "stdin is empty"\n');
  await initScriptStep(deps(sock), vm, script, { stage: s.stage });
  assert.deepEqual(sshCalls, [], 'no ssh when the agent answers');
  assert.deepEqual(s.log, [`init-script: ${script.length} bytes, as root, through the agent`, 'init-script done']);
  const cons = await consoleShows(/^banger-init-script: exit 0$/m);
  for (const l of ['start', 'hello as root', 'to stderr', 'stdin is empty', 'exit 0']) assert.match(cons, new RegExp(`^banger-init-script: ${l}$`, 'm'), cons);
});

test('a failing init script through the agent: E_INIT_SCRIPT with its exit code (128+N for a signal) and last lines', { skip }, async () => {
  const s = stages();
  await assert.rejects(
    initScriptStep(deps(sock), vm, Buffer.from('echo first\nfor i in $(seq 1 30); do echo line $i; done\necho oops >&2\nexit 7\n'), { stage: s.stage }),
    (e: any) => {
      assert.equal(e.code, 'E_INIT_SCRIPT');
      assert.match(e.message, /--init-script failed with exit code 7; last lines:\n(.|\n)*line 30\noops$/);
      assert.equal(e.details.exitCode, 7);
      assert.equal(e.details.tail.length, 20);
      assert.ok(!e.details.tail.includes('first'), 'only the last 20 lines');
      return true;
    },
  );
  await consoleShows(/^banger-init-script: exit 7$/m);
  await assert.rejects(
    initScriptStep(deps(sock), vm, Buffer.from('kill -9 $$\n'), { stage: s.stage }),
    (e: any) => e.code === 'E_INIT_SCRIPT' && e.details.exitCode === 137,
  );
});

test('cancelling kills the script through the agent (its process group)', { skip }, async () => {
  // The script would run 60 s: the call can only reject before that if the cancel worked, and
  // both its shell and its child must be gone afterwards (the whole group, not just the shell).
  const marker = join(dir, 'marker');
  const pids = join(dir, 'pids');
  const ac = new AbortController();
  const run = initScriptStep(deps(sock), vm, Buffer.from(`sleep 60 & echo "$$ $!" > '${pids}'; wait $!; touch '${marker}'\n`), {
    stage: () => {},
    signal: ac.signal,
  });
  const rejected = assert.rejects(run, (e: any) => e.code === 'E_CANCELLED');
  await until(() => existsSync(pids) && readFileSync(pids, 'utf8').endsWith('\n'), 'the script never started');
  const [shell, child] = readFileSync(pids, 'utf8').trim().split(' ').map(Number) as [number, number];
  assert.ok(alive(shell) && alive(child), 'the script runs');
  ac.abort();
  await rejected;
  await until(() => !alive(shell) && !alive(child), `the script's shell (${shell}) or its sleep (${child}) was left running`);
  assert.ok(!existsSync(marker));
});

test('no agent answering: the script runs over ssh (fallback), with the script on stdin', { skip }, async () => {
  const s = stages();
  sshCalls.length = 0;
  // another VM (the pool keys connections by VM), whose agent socket does not exist
  await initScriptStep(deps(join(dir, 'no-agent.sock')), { ...vm, id: 'id-w', name: 'w' }, Buffer.from('echo hi\n'), { stage: s.stage });
  assert.equal(sshCalls.length, 1);
  assert.equal(sshCalls[0]![0], 'ssh');
  assert.ok(sshCalls[0]!.includes('root@10.0.0.2'));
  assert.deepEqual(s.log, ['init-script: 8 bytes, as root, over ssh', 'init-script done']);
});
