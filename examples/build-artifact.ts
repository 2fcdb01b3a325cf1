// Copy a project into a VM, build it there, and copy the artefact back out.
//
//   node examples/build-artifact.ts [OUT_DIR]      (default: a temp directory)
//
// BANGER_VM=NAME uses an existing VM instead of a fresh one; BANGER_IMAGE picks the image.
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Banger } from 'banger';

// The project: sources and a build script (a real one would run make, cargo, npm …).
const work = mkdtempSync(join(tmpdir(), 'banger-example-'));
const project = join(work, 'hello');
mkdirSync(join(project, 'src'), { recursive: true });
writeFileSync(join(project, 'src', 'greeting.txt'), 'Hello from a microVM build\n');
writeFileSync(join(project, 'src', 'VERSION'), '1.2.3\n');
writeFileSync(
  join(project, 'build.sh'),
  'set -e\nmkdir -p dist\nv=$(cat src/VERSION)\ntar -czf "dist/hello-$v.tar.gz" -C src .\nsha256sum "dist/hello-$v.tar.gz" > dist/SHA256SUMS\necho "built hello-$v on $(uname -sr)"\n',
  { mode: 0o755 },
);

await using b = await Banger.connect();
await using fresh = process.env.BANGER_VM ? undefined : await b.vms.create({ image: process.env.BANGER_IMAGE ?? 'debian-bookworm' });
const vm = fresh ?? (await b.vms.get(process.env.BANGER_VM!));

await vm.files.rm('/build/hello', { recursive: true, force: true });
await vm.files.mkdir('/build');
await vm.files.copyIn(project, '/build/hello');
const build = await vm.exec('sh', { args: ['build.sh'], cwd: '/build/hello', timeoutMs: 300_000 });
process.stdout.write(build.stdout);
if (build.exitCode !== 0) throw new Error(`build failed (exit ${build.exitCode}): ${build.stderr.toString()}`);

const out = process.argv[2] ?? join(work, 'out');
await vm.files.copyOut('/build/hello/dist', out);
console.log(`artefact: ${join(out, 'hello-1.2.3.tar.gz')}`);
console.log(readFileSync(join(out, 'SHA256SUMS'), 'utf8').trim());
