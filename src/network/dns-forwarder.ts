import dgram from 'node:dgram';
import dnsPacket from 'dns-packet';
import { BangerError, ErrorCode } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import { type HostAllow, normaliseHost } from './allow-spec.js';
import type { Resolved } from './egress.js';

/**
 * The DNS forwarder of hostname allows (`--allow HOSTNAME[:PORT]`, docs/network-policy.md).
 *
 * Listens on UDP port 53 of the bridge's gateway address, where such a VM's resolv.conf
 * points. The asking VM is its source address (the VM's chain drops a spoofed one). A name
 * the VM may not reach gets NXDOMAIN; an allowed name's A query is forwarded to the host's
 * resolvers (config `network.dns`) and the A records of the answer are opened in the VM's
 * nftables sets for the record's TTL (`open`, egress.ts) before the answer goes back, so the
 * guest can connect as soon as it has the address. Other types of an allowed name get an
 * empty answer (a policy VM sends no IPv6).
 *
 * The guest is untrusted: a query over 512 bytes, with other than one question, or that does
 * not decode is dropped or refused; at most MAX_INFLIGHT queries are forwarded at once
 * (PER_VM_INFLIGHT per VM), the rest dropped (the guest's resolver retries); an upstream answer
 * is read once, bounded by UDP, and must match the query's id and question.
 */

export const MAX_QUERY_BYTES = 512;
export const MAX_INFLIGHT = 64;
export const PER_VM_INFLIGHT = 8;
const MAX_A_RECORDS = 32;
const UPSTREAM_TIMEOUT_MS = 2000;
const RCODE = { NOERROR: 0, NXDOMAIN: 3, REFUSED: 5 } as const;

/** What the forwarder does with one query (pure: answerPolicy). */
export type Verdict =
  | { kind: 'drop' }
  | { kind: 'refused' }
  | { kind: 'nxdomain' }
  | { kind: 'empty' }
  | { kind: 'forward'; name: string; allows: HostAllow[] };

/**
 * The answer policy. `hosts` is the asking VM's hostname allows (undefined: the source is no
 * VM with any, drop). One question of class IN; its name must equal an allowed host
 * (case-insensitive, trailing dot ignored): type A is forwarded, another type gets an empty
 * answer. Every other name is NXDOMAIN.
 */
export function answerPolicy(q: dnsPacket.DecodedPacket, hosts: HostAllow[] | undefined): Verdict {
  if (!hosts) return { kind: 'drop' };
  if (q.type !== 'query' || q.flag_qr) return { kind: 'drop' };
  if (q.questions?.length !== 1 || (q.answers?.length ?? 0) > 0) return { kind: 'refused' };
  const qq = q.questions[0]!;
  if (qq.class !== undefined && qq.class !== 'IN') return { kind: 'refused' };
  const name = normaliseHost(qq.name);
  const allows = name ? hosts.filter((h) => h.host === name) : [];
  if (!name || !allows.length) return { kind: 'nxdomain' };
  return qq.type === 'A' ? { kind: 'forward', name, allows } : { kind: 'empty' };
}

/** The addresses to open for an upstream answer's A records, grouped by TTL. */
export function resolvedOf(answers: dnsPacket.Answer[], allows: HostAllow[]): Map<number, Resolved[]> {
  const out = new Map<number, Resolved[]>();
  for (const a of answers.filter((x) => x.type === 'A').slice(0, MAX_A_RECORDS)) {
    const ip = (a as { data: string }).data;
    const ttl = (a as { ttl?: number }).ttl ?? 0;
    const list = out.get(ttl) ?? [];
    for (const h of allows) list.push(h.port === undefined ? { ip } : { ip, port: h.port });
    out.set(ttl, list);
  }
  return out;
}

interface VmEntry {
  vmId: string;
  hosts: HostAllow[];
  inflight: number;
}

export interface ForwarderOptions {
  /** The host's resolvers, asked in order (config network.dns). */
  upstreams: () => string[];
  /** Open resolved addresses in a VM's sets for ttl seconds (Egress.addResolved). */
  open: (vmId: string, entries: Resolved[], ttl: number) => Promise<void>;
  log: Logger;
  /** Upstream port (53; tests only). */
  upstreamPort?: number;
}

export class DnsForwarder {
  /** VM address → its hostname allows. */
  private readonly vms = new Map<string, VmEntry>();
  private sock?: dgram.Socket;
  private bound?: string;
  private inflight = 0;

  constructor(private readonly opts: ForwarderOptions) {}

  /** True when `register(ip, vmId, hosts)` would change what an already registered VM may resolve. */
  changes(vmId: string, hosts: HostAllow[]): boolean {
    const e = [...this.vms.values()].find((v) => v.vmId === vmId);
    return !!e && JSON.stringify(e.hosts) !== JSON.stringify(hosts);
  }

  register(ip: string, vmId: string, hosts: HostAllow[]): void {
    this.unregister(vmId);
    this.vms.set(ip, { vmId, hosts, inflight: 0 });
  }

  /** Forget a VM; true when it was registered. */
  unregister(vmId: string): boolean {
    for (const [ip, v] of this.vms) {
      if (v.vmId === vmId) {
        this.vms.delete(ip);
        return true;
      }
    }
    return false;
  }

  /** Bind UDP `gateway`:53 (once; the bridge must hold the address). */
  async listen(gateway: string): Promise<void> {
    if (this.bound === gateway) return;
    this.close();
    const sock = dgram.createSocket({ type: 'udp4', recvBufferSize: 1 << 20 });
    await new Promise<void>((resolve, reject) => {
      sock.once('error', (e) =>
        reject(
          new BangerError(ErrorCode.Network, `the DNS forwarder for hostname allows cannot listen on ${gateway}:53: ${e.message}`, {
            hint: 'another DNS server holds port 53 on the bridge address; stop it or give banger its own bridge',
          }),
        ),
      );
      sock.bind(53, gateway, () => resolve());
    });
    sock.on('error', (e) => this.opts.log.warn('dns forwarder socket error', { error: e.message }));
    sock.on('message', (msg, rinfo) => void this.onQuery(sock, msg, rinfo).catch((e) => this.opts.log.warn('dns query failed', { error: String(e) })));
    sock.unref();
    this.sock = sock;
    this.bound = gateway;
  }

  close(): void {
    this.sock?.close();
    this.sock = undefined;
    this.bound = undefined;
  }

  private async onQuery(sock: dgram.Socket, msg: Buffer, from: dgram.RemoteInfo): Promise<void> {
    const vm = this.vms.get(from.address);
    if (!vm || msg.length > MAX_QUERY_BYTES) return;
    let q: dnsPacket.DecodedPacket;
    try {
      q = dnsPacket.decode(msg);
    } catch {
      return;
    }
    const v = answerPolicy(q, vm.hosts);
    const reply = (rcode: number, answers: dnsPacket.Answer[] = []) =>
      sock.send(
        dnsPacket.encode({
          type: 'response',
          id: q.id,
          flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | rcode,
          questions: q.questions,
          answers,
        }),
        from.port,
        from.address,
      );
    if (v.kind === 'drop') return;
    if (v.kind === 'refused') return reply(RCODE.REFUSED);
    if (v.kind === 'nxdomain') return reply(RCODE.NXDOMAIN);
    if (v.kind === 'empty') return reply(RCODE.NOERROR);
    if (this.inflight >= MAX_INFLIGHT || vm.inflight >= PER_VM_INFLIGHT) return;
    this.inflight++;
    vm.inflight++;
    try {
      const up = await this.ask(v.name);
      if (!up) return;
      const rcode = (up as { rcode?: string }).rcode ?? 'NOERROR';
      if (rcode !== 'NOERROR') return reply(rcode === 'NXDOMAIN' ? RCODE.NXDOMAIN : RCODE.REFUSED);
      const answers = (up.answers ?? []).filter((a) => a.type === 'A' || a.type === 'CNAME');
      for (const [ttl, entries] of resolvedOf(answers, v.allows)) await this.opts.open(vm.vmId, entries, ttl);
      reply(RCODE.NOERROR, answers);
    } finally {
      this.inflight--;
      vm.inflight--;
    }
  }

  /** Ask the upstream resolvers for `name` A, in order; the first answer that matches, or undefined. */
  private async ask(name: string): Promise<dnsPacket.DecodedPacket | undefined> {
    for (const server of this.opts.upstreams()) {
      const r = await askOne(server, this.opts.upstreamPort ?? 53, name).catch(() => undefined);
      if (r) return r;
    }
    return undefined;
  }
}

function askOne(server: string, port: number, name: string): Promise<dnsPacket.DecodedPacket | undefined> {
  const id = Math.floor(Math.random() * 65536);
  const s = dgram.createSocket('udp4');
  return new Promise((resolve) => {
    const done = (r: dnsPacket.DecodedPacket | undefined) => {
      clearTimeout(timer);
      s.close();
      resolve(r);
    };
    const timer = setTimeout(() => done(undefined), UPSTREAM_TIMEOUT_MS);
    s.on('error', () => done(undefined));
    s.on('message', (m, r) => {
      if (r.address !== server || r.port !== port) return;
      try {
        const p = dnsPacket.decode(m);
        const qq = p.questions?.[0];
        if (p.id === id && p.type === 'response' && qq?.type === 'A' && normaliseHost(qq.name) === name) done(p);
      } catch {
        /* not an answer to us: keep waiting */
      }
    });
    s.send(dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name, class: 'IN' }] }), port, server);
  });
}
