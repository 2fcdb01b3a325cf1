// Start a web server in a VM and fetch a page from it through a published port.
//
//   node examples/web-server.ts
//
// The VM publishes guest port 8000 on the host's 127.0.0.1:PORT (BANGER_PORT, default 18000).
// BANGER_VM=NAME uses an existing VM instead (it must publish a port to guest port 8000).
import { Banger } from 'banger';

const hostPort = Number(process.env.BANGER_PORT ?? 18000);
await using b = await Banger.connect();
await using fresh = process.env.BANGER_VM
  ? undefined
  : await b.vms.create({ image: process.env.BANGER_IMAGE ?? 'debian-bookworm', ports: [`${hostPort}:8000`] });
const vm = fresh ?? (await b.vms.get(process.env.BANGER_VM!));
const port = vm.info.spec.ports?.find((p) => p.guestPort === 8000);
if (!port) throw new Error(`vm ${vm.name} publishes no port to guest port 8000`);

// A small HTTP server (perl-base is in every Debian image), run as a process we hold on to.
await vm.files.write(
  '/srv/http.pl',
  [
    'use IO::Socket::INET; $| = 1;',
    '$s = IO::Socket::INET->new(LocalPort => 8000, Listen => 5, ReuseAddr => 1) or die "listen: $!";',
    'print "listening\\n";',
    'while ($c = $s->accept) { <$c>; print $c "HTTP/1.0 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\nhello from $ENV{GREETER}\\n"; close $c }',
    '',
  ].join('\n'),
);
const server = await vm.spawn('perl', { args: ['/srv/http.pl'], env: { GREETER: `the guest ${vm.name}` } });
await new Promise<void>((resolve, reject) => {
  server.stdout.on('data', (d: Buffer) => d.toString().includes('listening') && resolve());
  server.wait().then((e) => reject(new Error(`server exited with ${e.exitCode}`)), reject);
});

// The daemon forwards 127.0.0.1:PORT on its host to the guest's port 8000.
let body = '';
for (let i = 0; i < 50 && !body; i++) {
  body = await fetch(`http://${port.hostIp}:${port.hostPort}/`).then(
    (r) => r.text(),
    () => '',
  );
  if (!body) await new Promise((r) => setTimeout(r, 200));
}
console.log(`GET http://${port.hostIp}:${port.hostPort}/ -> ${body.trim()}`);
server.kill('SIGTERM');
await server.wait();
if (!body.includes('hello from')) process.exitCode = 1;
