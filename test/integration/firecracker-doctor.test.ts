import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { TestDaemon } from '../helpers/daemon.js';
import { makeStandin } from '../helpers/firecracker-standin/index.js';

/** `banger doctor` shows the Firecracker version (`firecracker --version`, here the test stand-in's) and refuses < 1.5. */
const standin = makeStandin();
after(() => standin.remove());
const d = new TestDaemon({ cliOnly: true, env: { BANGER_FIRECRACKER: standin.binary } });

async function fcCheck(): Promise<{ status: string; detail: string; hint?: string }> {
  const r = await d.cli(['--json', 'doctor', '--skip', 'kvm']);
  const out = JSON.parse(r.stdout) as { checks: { name: string; status: string; detail: string; hint?: string }[] };
  return out.checks.find((c) => c.name === 'firecracker')!;
}

test('doctor: firecracker v1.16.1 passes with its version; v1.4.0 fails; a binary that is not Firecracker fails', async () => {
  standin.setKnobs({ FC_STANDIN_VERSION: '1.16.1' });
  assert.deepEqual(await fcCheck(), { name: 'firecracker', status: 'pass', detail: `${standin.binary} v1.16.1` });
  standin.setKnobs({ FC_STANDIN_VERSION: '1.4.0' });
  const old = await fcCheck();
  assert.equal(old.status, 'fail');
  assert.match(old.detail, /v1\.4\.0, older than 1\.5/);
  standin.setKnobs({ FC_STANDIN_VERSION: 'unknown' }); // prints "Firecracker vunknown": no version
  assert.equal((await fcCheck()).status, 'fail');
});

test('doctor: no firecracker binary is only a warning', async () => {
  const none = new TestDaemon({ cliOnly: true, env: { BANGER_FIRECRACKER: '/nonexistent/firecracker' } });
  const r = await none.cli(['--json', 'doctor', '--skip', 'kvm']);
  const c = (JSON.parse(r.stdout) as { checks: { name: string; status: string; detail: string }[] }).checks.find((x) => x.name === 'firecracker')!;
  assert.deepEqual([c.status, c.detail], ['warn', '/nonexistent/firecracker not found']);
});
