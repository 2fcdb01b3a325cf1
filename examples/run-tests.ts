// Run a test suite in a fresh VM and exit with its exit code.
//
//   node examples/run-tests.ts            (as root, or a member of the 'banger' group)
//
// BANGER_VM=NAME runs it in an existing VM instead of creating one (CI shares one guest);
// BANGER_IMAGE picks the image of a fresh one (default debian-bookworm).
import { Banger } from 'banger';

await using b = await Banger.connect();
await using fresh = process.env.BANGER_VM ? undefined : await b.vms.create({ image: process.env.BANGER_IMAGE ?? 'debian-bookworm' });
const vm = fresh ?? (await b.vms.get(process.env.BANGER_VM!));

// A tiny project with a test suite (any runner works the same way: it is just a command).
await vm.files.mkdir('/srv/suite/tests');
await vm.files.write('/srv/suite/add.sh', 'add() { echo $(($1 + $2)); }\n');
await vm.files.write('/srv/suite/tests/add_test.sh', '. ../add.sh\n[ "$(add 2 3)" = 5 ]\n');
await vm.files.write('/srv/suite/tests/neg_test.sh', '. ../add.sh\n[ "$(add -2 -3)" = -5 ]\n');
await vm.files.write(
  '/srv/suite/run.sh',
  [
    'cd tests',
    'pass=0; fail=0',
    'for t in *_test.sh; do',
    '  if sh "$t"; then pass=$((pass+1)); echo "ok   $t"; else fail=$((fail+1)); echo "FAIL $t"; fi',
    'done',
    'echo "$pass passed, $fail failed"',
    '[ "$fail" -eq 0 ]',
    '',
  ].join('\n'),
  { mode: 0o755 },
);

const r = await vm.exec('sh', { args: ['run.sh'], cwd: '/srv/suite', timeoutMs: 120_000 });
process.stdout.write(r.stdout);
process.stderr.write(r.stderr);
console.log(`test suite exit code: ${r.exitCode}`);
process.exitCode = r.exitCode;
