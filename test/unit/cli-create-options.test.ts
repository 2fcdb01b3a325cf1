import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Command } from 'commander';
import { buildProgram } from '../../src/cli/main.js';
import { addCreateOptions, createParams } from '../../src/cli/commands/create-options.js';

/** The `vm create` options are defined once and `banger run` takes them (issue 13). */

function sub(program: Command, path: string[]): Command {
  let c = program;
  for (const name of path) c = c.commands.find((x) => x.name() === name)!;
  assert.ok(c, path.join(' '));
  return c;
}
const flags = (c: Command) => c.options.map((o) => `${o.flags} | ${o.description}`);

test('vm create and run list the same create options (one definition), run without --no-start/--no-wait', async () => {
  const { program } = await buildProgram();
  const create = flags(sub(program, ['vm', 'create'])).filter((f) => !f.startsWith('--image ') && !f.startsWith('--from '));
  const run = flags(sub(program, ['run']));
  const expected = create.filter((f) => !/^--no-(start|wait) /.test(f));
  assert.equal(create.length - expected.length, 2);
  assert.deepEqual(
    run.filter((f) => create.includes(f)),
    expected,
    'run has every create option but --no-start/--no-wait, same flags and text',
  );
  for (const f of [
    '--kernel <kernel>',
    '--vmm <vmm>',
    '-p, --publish <spec>',
    '--port-max-conns <n>',
    '--port-idle-timeout <seconds>',
    '--mount <spec>',
    '--init-script <file>',
    '--memory <MiB>',
    '--disk-size <size>',
    '--name <name>',
    '--nat',
    '--egress <mode>',
    '--allow <dest>',
    '--allow-vm <name>',
  ]) {
    assert.ok(
      run.some((x) => x.startsWith(`${f} |`)),
      `run takes ${f}`,
    );
  }
  assert.ok(!run.some((x) => x.startsWith('--no-wait')), 'run always waits for the agent');
});

async function parse(argv: string[], omit: Array<'start' | 'wait'> = []): Promise<{ params: Record<string, unknown>; args: string[] }> {
  let got: { params: Record<string, unknown>; args: string[] } | undefined;
  const cmd = new Command('t')
    .exitOverride()
    .configureOutput({ writeErr: () => {} })
    .argument('<image>')
    .argument('[cmd...]');
  addCreateOptions(cmd, omit).action(async (image: string, rest: string[], o) => {
    got = { params: await createParams(o), args: [image, ...rest] };
  });
  await cmd.parseAsync(argv, { from: 'user' });
  return got!;
}

test('createParams: --egress, repeatable --allow and --allow-vm reach their fields; a bad --egress is refused', async () => {
  const r = await parse(['--egress', 'allow', '--allow', '192.0.2.7:443', '--allow', '10.0.0.0/8', '--allow-vm', 'a', '--allow-vm', 'b', 'img']);
  assert.deepEqual(r.params, { nat: false, start: true, wait: true, egress: 'allow', allow: ['192.0.2.7:443', '10.0.0.0/8'], allowVm: ['a', 'b'] });
  await assert.rejects(parse(['--egress', 'open', 'img']), /argument 'open' is invalid/);
});

test('createParams: every flag reaches its vm.create field; repeatable -p/--mount; relative HOSTDIR made absolute; script base64', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'banger-createopts-'));
  try {
    writeFileSync(join(dir, 'setup.sh'), '#!/bin/sh\necho hi\n');
    const r = await parse([
      '--name',
      'n1',
      '--kernel',
      'k1',
      '--vcpu',
      '3',
      '--memory',
      '2048',
      '--disk-size',
      '4G',
      '--work-disk',
      '1G',
      '--nat',
      '--vmm',
      'firecracker',
      '--package-mirror',
      'http://10.0.0.1/debian',
      '--package-proxy',
      'http://10.0.0.1:3128',
      '-p',
      '8080:80',
      '-p',
      '127.0.0.1:9000:90/tcp',
      '--port-max-conns',
      '32',
      '--port-idle-timeout',
      '0',
      '--mount',
      './site:/srv:ro',
      '--mount',
      '/abs:/data',
      '--init-script',
      join(dir, 'setup.sh'),
      '--keep-on-failure',
      '--no-wait',
      'img',
      '--',
      'sh',
      '-c',
      'exit 3',
    ]);
    assert.deepEqual(r.args, ['img', 'sh', '-c', 'exit 3']);
    assert.deepEqual(r.params, {
      name: 'n1',
      kernel: 'k1',
      vcpu: 3,
      memoryMiB: 2048,
      diskSize: '4G',
      workDisk: '1G',
      nat: true,
      start: true,
      wait: false,
      vmm: 'firecracker',
      packageMirror: 'http://10.0.0.1/debian',
      packageProxy: 'http://10.0.0.1:3128',
      ports: ['8080:80', '127.0.0.1:9000:90/tcp'],
      portMaxConnections: 32,
      portIdleTimeoutSeconds: 0,
      mounts: [`${resolve('site')}:/srv:ro`, '/abs:/data'],
      initScript: Buffer.from('#!/bin/sh\necho hi\n').toString('base64'),
      keepOnFailure: true,
    });
    // nothing given: only nat:false and start/wait defaults; no empty ports/mounts sent
    assert.deepEqual((await parse(['img'], ['start', 'wait'])).params, { nat: false });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('createParams: bad values are refused naming the flag', async () => {
  await assert.rejects(parse(['--vcpu', 'two', 'img']), /--vcpu must be a whole number, got 'two'/);
  await assert.rejects(parse(['--vmm', 'kvmtool', 'img']), /--vmm <vmm>' argument 'kvmtool' is invalid/);
  await assert.rejects(
    parse(['--init-script', '/nonexistent/setup.sh', 'img']),
    (e: any) => e.code === 'E_NOT_FOUND' && /--init-script \/nonexistent\/setup\.sh/.test(e.message),
  );
  await assert.rejects(parse(['--no-wait', 'img'], ['wait']), /unknown option '--no-wait'/);
});
