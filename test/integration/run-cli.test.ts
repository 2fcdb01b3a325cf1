import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BangerError, ErrorCode } from '../../src/core/errors.js';
import { nullLogger } from '../../src/core/log.js';
import { defaultSources } from '../../src/guest/inject.js';
import { RpcServer } from '../../src/rpc/server.js';
import { agentPool, connectUnix } from '../../src/vms/agent.js';
import { vmMethods } from '../../src/daemon/handlers/vms.js';
import type { VmService } from '../../src/vms/service.js';

/**
 * `banger run IMAGE -- CMD` with the `vm create` options, through the built CLI and the
 * daemon's real vm.* handlers on a real RpcServer (so the params pass the typed contract),
 * with a recording VM service whose exec goes to the real C agent on a Unix socket here.
 * Proves: every create flag reaches vm.create, the command runs and its exit code comes back,
 * --rm removes the VM also when the command fails, and a refused create runs nothing.
 * (test/e2e/vm-exec.test.ts runs `banger run --rm` against a real guest.)
 */
const AGENT = defaultSources().agentPath;
const BANGER = new URL('../../../bin/banger', import.meta.url).pathname;
const skip = existsSync(AGENT) ? undefined : 'agent not built (npm run build)';
let dir = '';
let agent: ChildProcess | undefined;
let server: RpcServer | undefined;
let env: NodeJS.ProcessEnv = {};
const calls: Array<[string, unknown]> = [];

before(async () => {
  if (skip) return;
  dir = mkdtempSync(join(tmpdir(), 'banger-run-cli-'));
  const agentSock = join(dir, 'agent.sock');
  agent = spawn(AGENT, ['--unix', agentSock], { stdio: 'ignore' });
  for (let i = 0; i < 100 && !existsSync(agentSock); i++) await new Promise((r) => setTimeout(r, 20));
  const svc = {
    create: async (p: { name?: string; image: string }) => {
      calls.push(['create', p]);
      if (p.image === 'missing') throw new BangerError(ErrorCode.NotFound, `image '${p.image}' not found`);
      return { name: p.name ?? 'gen-vm-1' };
    },
    rm: async (names: string[], force: boolean) => (calls.push(['rm', { names, force }]), []),
    get: (name: string) => ({ name, id: `id-${name}`, vmm: 'qemu' }),
    resumeIfPaused: async () => undefined, // never paused here (vms/pause.ts)
    observe: async () => ({ running: true }),
    driver: () => ({ openAgentStream: () => connectUnix(agentSock) }),
    handle: (vm: { id: string; name: string }) => ({ id: vm.id, name: vm.name }),
  } as unknown as VmService;
  server = new RpcServer({ socketPath: join(dir, 'd.sock'), log: nullLogger, methods: vmMethods(svc) });
  await server.listen();
  env = { ...process.env, BANGER_SOCKET: join(dir, 'd.sock'), BANGER_ROOT: join(dir, 'root') };
});
after(async () => {
  agentPool.closeAll();
  await server?.close();
  agent?.kill('SIGKILL');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function banger(args: string[], input = ''): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [BANGER, ...args], { env, cwd: dir });
  let out = '';
  let err = '';
  child.stdout!.on('data', (b) => (out += b));
  child.stderr!.on('data', (b) => (err += b));
  child.stdin!.end(input);
  const t = setTimeout(() => child.kill('SIGKILL'), 30_000);
  return new Promise((resolve) => child.on('close', (code) => (clearTimeout(t), resolve({ code, stdout: out, stderr: err }))));
}

test('banger run: the create options reach vm.create, the command runs, its exit code returns, --rm removes the VM', { skip }, async () => {
  writeFileSync(join(dir, 'setup.sh'), 'echo provisioned\n');
  calls.length = 0;
  const r = await banger(
    [
      'run',
      '--rm',
      '--nat',
      '-p',
      '8080:80',
      '-p',
      '127.0.0.1:9443:443',
      '--mount',
      './site:/srv:ro',
      '--init-script',
      'setup.sh',
      '--vmm',
      'firecracker',
      '--kernel',
      'k1',
      '--name',
      'r1',
      '--vcpu',
      '2',
      '--memory',
      '512',
      '--disk-size',
      '2G',
      '--work-disk',
      '1G',
      '-i',
      '-e',
      'X=y',
      'debian-bookworm',
      '--',
      'sh',
      '-c',
      'echo "$X $(cat)"; exit 7',
    ],
    'from-stdin',
  );
  assert.equal(r.code, 7, r.stderr);
  assert.equal(r.stdout, 'y from-stdin\n');
  assert.deepEqual(calls, [
    [
      'create',
      {
        image: 'debian-bookworm',
        name: 'r1',
        kernel: 'k1',
        vcpu: 2,
        memoryMiB: 512,
        diskSize: '2G',
        workDisk: '1G',
        nat: true,
        vmm: 'firecracker',
        ports: ['8080:80', '127.0.0.1:9443:443'],
        mounts: [`${dir}/site:/srv:ro`],
        initScript: Buffer.from('echo provisioned\n').toString('base64'),
      },
    ],
    ['rm', { names: ['r1'], force: true }],
  ]);

  // without --rm the VM stays; without flags vm.create gets only the image (and nat:false)
  calls.length = 0;
  const keep = await banger(['run', 'debian-bookworm', '--', 'true']);
  assert.equal(keep.code, 0, keep.stderr);
  assert.deepEqual(calls, [['create', { image: 'debian-bookworm', nat: false }]]);
});

test('banger run: a refused create or a bad flag runs nothing and names the problem', { skip }, async () => {
  calls.length = 0;
  const missing = await banger(['run', '--rm', 'missing', '--', 'true']);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /image 'missing' not found/);
  assert.deepEqual(
    calls.map((c) => c[0]),
    ['create'],
    'nothing to remove when create failed',
  );
  calls.length = 0;
  const badVcpu = await banger(['run', '--vcpu', 'many', 'img', '--', 'true']);
  assert.notEqual(badVcpu.code, 0);
  assert.match(badVcpu.stderr, /--vcpu must be a whole number, got 'many'/);
  const noScript = await banger(['run', '--init-script', 'nope.sh', 'img', '--', 'true']);
  assert.notEqual(noScript.code, 0);
  assert.match(noScript.stderr, /--init-script nope\.sh/);
  const noWait = await banger(['run', '--no-wait', 'img', '--', 'true']);
  assert.notEqual(noWait.code, 0);
  assert.match(noWait.stderr, /unknown option '--no-wait'/);
  assert.deepEqual(calls, [], 'no vm.create for a bad flag');
});
