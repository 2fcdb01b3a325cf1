import { VMM_CHOICES } from './vmm.js';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { z } from 'zod';
import { BangerError, ErrorCode } from './errors.js';
import { resolveRoot, resolveSocket } from './paths.js';
import { PackageUrl } from './package-url.js';
import { applyEnvOverrides } from './config-env.js';
import { durationProblem } from './duration.js';
import { ConsoleLogMaxBytes, CpuQuota, DiskBps, DiskIops, PidsMax, PortIdleTimeoutSeconds, PortMaxConnections } from './limits.js';

/**
 * Configuration: a JSON file plus env overrides (`core/config-env.ts`; both pass one schema). File: `BANGER_CONFIG`, else
 * `$BANGER_ROOT/config.json` when BANGER_ROOT is set, else /etc/banger/config.json.
 * A missing file means defaults; a malformed one is an error naming the file and field.
 */
/** Why `v` is not a usable bridge subnet (IPv4 CIDR, prefix /8 to /29), or undefined when it is. */
export function subnetProblem(v: string): string | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(v);
  if (!m) return `'${v}' is not an IPv4 CIDR (example: 172.16.0.0/24)`;
  if (m.slice(1, 5).some((o) => Number(o) > 255)) return `'${v}' has an octet above 255`;
  const prefix = Number(m[5]);
  if (prefix < 8 || prefix > 29) return `'${v}': prefix /${prefix} must be between /8 and /29`;
  return undefined;
}

const Subnet = z.string().superRefine((v, ctx) => {
  const problem = subnetProblem(v);
  if (problem) ctx.addIssue({ code: z.ZodIssueCode.custom, message: problem });
});

/** A DNS server handed to guests (resolv.conf, the first-boot environment): an IP address, nothing else. */
const DnsServer = z.string().refine(
  (v) => isIP(v) !== 0,
  (v) => ({ message: `'${v}' is not an IPv4 or IPv6 address` }),
);

export const ConfigSchema = z
  .object({
    /** Remote kernel catalogs (URLs), merged over the embedded one by name. */
    kernelCatalogs: z.array(z.string().url()).default([]),
    /** Kernel used when a command needs one and none is given. */
    defaultKernel: z.string().default('debian-cloud-amd64'),
    /** Debian archive mirror for kernel entries of kind "debian" (default: host apt sources). */
    debianMirror: z.string().url().optional(),
    /** Keyring used to verify Debian InRelease files. */
    debianKeyring: z.string().default('/usr/share/keyrings/debian-archive-keyring.gpg'),
    /** Registry mirrors, tried before the origin: { "docker.io": ["https://mirror.example"] }. */
    registryMirrors: z.record(z.array(z.string().url())).default({}),
    /** Registries allowed over plain HTTP besides localhost/127.0.0.1. */
    insecureRegistries: z.array(z.string()).default([]),
    /**
     * Where image builds unpack layers before mkfs.ext4 -d: "auto" uses RAM (/dev/shm, a
     * tmpfs) when the estimated tree fits comfortably, else `<root>/tmp`; "disk" always
     * `<root>/tmp`; "ram" prefers RAM even for large trees (falls back to disk on ENOSPC).
     */
    imageStaging: z.enum(['auto', 'ram', 'disk']).default('auto'),
    /**
     * Ceilings on what one image may unpack to, all layers together (a hostile or broken
     * layer cannot fill the disk or RAM): `maxEntries` tar entries, `maxBytes` bytes of
     * regular-file content. Past either the build fails with E_TOO_LARGE naming the entry.
     */
    imageLimits: z
      .object({
        maxEntries: z.number().int().min(1).default(2_000_000),
        maxBytes: z
          .number()
          .int()
          .min(1)
          .default(64 * 1024 ** 3),
      })
      .strict()
      .default({}),
    /**
     * Every download (registries, kernel bundles and catalogs, the Debian archive), in seconds:
     * connect, response headers, idle body (no byte for this long), and the overall deadline of
     * a small document (manifest, catalog, index, token) and of a large download (layer, bundle, .deb).
     */
    http: z
      .object({
        connectTimeoutSeconds: z.number().positive().max(3600).default(15),
        headersTimeoutSeconds: z.number().positive().max(3600).default(30),
        idleTimeoutSeconds: z.number().positive().max(3600).default(30),
        documentDeadlineSeconds: z.number().positive().max(86400).default(120),
        downloadDeadlineSeconds: z.number().positive().max(604800).default(3600),
      })
      .strict()
      .default({}),
    network: z
      .object({
        bridge: z
          .string()
          .regex(/^[a-zA-Z0-9_-]{1,15}$/, "an interface name is 1-15 letters, digits, '_' or '-'")
          .default('banger0'),
        subnet: Subnet.default('172.16.0.0/24'),
        dns: z.array(DnsServer).default(['1.1.1.1', '8.8.8.8']),
      })
      .default({}),
    vm: z
      .object({
        vmm: z.enum(VMM_CHOICES).default('auto'),
        vcpu: z.number().int().min(1).max(32).default(2),
        memoryMiB: z.number().int().min(128).default(1024),
        sshTimeoutSeconds: z.number().int().min(1).default(120),
        /** SSH wait while a first boot installs systemd + sshd in the guest (registry images without them). */
        firstBootTimeoutSeconds: z.number().int().min(1).default(1800),
        stopTimeoutSeconds: z.number().int().min(1).default(20),
        /**
         * Mask units that cost boot time and do nothing in a banger VM (guest/constants.ts
         * LEAN_MASKED_UNITS, on the kernel command line, so images that ship systemd get it too).
         */
        leanBoot: z.boolean().default(true),
        /** Default lifetime of a new VM (`30m`, `2h`, `1d`); none unless set. `vm create --ttl` overrides. */
        ttl: z
          .string()
          .superRefine((v, ctx) => {
            const problem = durationProblem(v);
            if (problem) ctx.addIssue({ code: z.ZodIssueCode.custom, message: problem });
          })
          .optional(),
        /** What a VM's deadline does: `stop` (disk kept) or `rm`. `vm create --on-expire` overrides. */
        onExpire: z.enum(['stop', 'rm']).default('stop'),
        /**
         * Egress policy of a VM created with no egress flag (docs/network-policy.md): `deny`,
         * `nat` or `allow` (with no --allow: nothing); unset: no policy, as before.
         */
        egress: z.enum(['deny', 'nat', 'allow']).optional(),
        /**
         * Cap of a VM's serial console log: past it the daemon moves the newest `consoleLogMaxBytes`
         * to console.log.1 and empties console.log (vms/console-log.ts).
         */
        consoleLogMaxBytes: ConsoleLogMaxBytes.default(8 * 1024 * 1024),
      })
      .default({}),
    /**
     * Published ports (`vm create -p`), per port: clients at once (the next is refused, closed at
     * once) and seconds of idleness after which a connection is closed on both sides (0: never).
     * `vm create --port-max-conns / --port-idle-timeout` override them; a VM keeps the values it
     * was created with.
     */
    ports: z
      .object({
        maxConnections: PortMaxConnections.default(256),
        idleTimeoutSeconds: PortIdleTimeoutSeconds.default(600),
      })
      .strict()
      .default({}),
    /**
     * Resource limits of every VM (docs/limits.md). `cgroup`: each VMM runs in its own cgroup
     * (v2, else v1) with memory = the VM's RAM + `memoryOverheadMiB` and `pidsMax`, when the
     * host has one (else VMs run without, and `banger doctor` warns). `cpuQuota`, `diskIops`,
     * `diskBps`: defaults of `vm create --cpu-quota / --disk-iops / --disk-bps` (none unless set).
     */
    limits: z
      .object({
        cgroup: z.boolean().default(true),
        memoryOverheadMiB: z.number().int().min(0).max(65536).default(1024),
        pidsMax: PidsMax.default(1024),
        cpuQuota: CpuQuota.optional(),
        diskIops: DiskIops.optional(),
        diskBps: DiskBps.optional(),
      })
      .strict()
      .default({}),
    /** Defaults for a first boot's package install (vm create --package-mirror / --package-proxy override). */
    firstBoot: z
      .object({
        /** Archive base URL used instead of the guest's own sources for the install (Debian: http://HOST/debian). */
        packageMirror: PackageUrl.optional(),
        /** HTTP proxy for the install (http_proxy, apt Acquire::http::Proxy). */
        packageProxy: PackageUrl.optional(),
        /**
         * Prepare an image that needs the install once, on its first `vm create` (vms/prepare.ts),
         * so VMs start from the result. false: every VM installs in its own first boot (slow;
         * kept for comparison and for hosts where a builder VM cannot run).
         */
        prepare: z.boolean().default(true),
        /** Warm an image (`image warm`, default shape) right after an explicit `image prepare` (`--no-warm` skips it). */
        warmAfterPrepare: z.boolean().default(true),
      })
      .strict()
      .default({}),
    /** Firecracker options; `jailer`: launch Firecracker through its jailer (docs/firecracker.md, Jailer). */
    firecracker: z
      .object({
        jailer: z
          .object({
            enabled: z.boolean().default(false),
            binary: z.string().default('jailer'),
            chrootBaseDir: z.string().startsWith('/').default('/srv/jailer'),
            /** A VM's uid = gid = uidBase + the last 16 bits of its id. */
            uidBase: z.number().int().min(1).max(0xffff_0000).default(900_000),
            cgroupVersion: z.union([z.literal(1), z.literal(2)]).default(2),
            parentCgroup: z
              .string()
              .regex(/^[a-zA-Z0-9._-]+$/)
              .default('banger'),
          })
          .strict()
          .default({}),
      })
      .strict()
      .default({}),
    binaries: z
      .object({
        qemu: z.string().default('qemu-system-x86_64'),
        firecracker: z.string().default('firecracker'),
      })
      .default({}),
  })
  .strict();

export type Config = z.infer<typeof ConfigSchema> & { root: string; socket: string; configFile: string };

export function resolveConfigFile(env: NodeJS.ProcessEnv = process.env): string {
  if (env.BANGER_CONFIG) return env.BANGER_CONFIG;
  if (env.BANGER_ROOT) return join(env.BANGER_ROOT, 'config.json');
  return '/etc/banger/config.json';
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const file = resolveConfigFile(env);
  let raw: unknown = {};
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code !== 'ENOENT') {
      throw new BangerError(ErrorCode.Invalid, `cannot read config file ${file}: ${err.message}`, {
        hint: 'fix the JSON or point BANGER_CONFIG elsewhere',
        cause: e,
      });
    }
  }
  const withEnv = applyEnvOverrides(raw, env);
  const parsed = ConfigSchema.safeParse(withEnv.raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const field = issue.path.join('.') || '(root)';
    // The variable that set this field (or a parent of it), if any: name it, not the file.
    const variable = [...withEnv.fromEnv].find(([f]) => field === f || field.startsWith(f + '.'))?.[1];
    if (variable) {
      throw new BangerError(ErrorCode.Invalid, `${variable}: ${issue.message}`, {
        hint: `${variable} overrides config field '${field}'`,
        details: { field, env: variable },
      });
    }
    throw new BangerError(ErrorCode.Invalid, `config file ${file}: field '${field}': ${issue.message}`, {
      hint: 'see README.md, section Configuration',
    });
  }
  const cfg = parsed.data;
  return { ...cfg, root: resolveRoot(env), socket: resolveSocket(env), configFile: file };
}
