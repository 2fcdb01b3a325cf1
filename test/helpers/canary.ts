import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A canary directory OUTSIDE any staging root: the target of hostile symlink swaps. It holds
 * entries named like the ones hostile archives create (`victim`, `fifo`, `null`, `bin`, `hl`,
 * `sub/`, `ln`, `passwd`), with known owners, modes, times and xattrs. `snapshot()` records
 * every entry's type, uid, gid, mode, rdev, mtime AND ctime (any chown/chmod/utimes/setxattr
 * moves ctime, even one that sets the same value) plus every xattr (getfattr, hex), so
 * "unchanged" means nothing touched it.
 */
export class Canary {
  readonly dir: string;

  constructor(label = 'canary') {
    this.dir = mkdtempSync(join(tmpdir(), `banger-${label}-`));
    const files = ['victim', 'fifo', 'null', 'bin', 'hl', 'ln', 'passwd', 'file', 'x'];
    for (const f of files) writeFileSync(join(this.dir, f), `canary ${f}\n`, { mode: 0o640 });
    mkdirSync(join(this.dir, 'sub'), { mode: 0o750 });
    writeFileSync(join(this.dir, 'sub', 'inner'), 'inner\n', { mode: 0o600 });
    mkdirSync(join(this.dir, 'e'), { mode: 0o750 });
    writeFileSync(join(this.dir, 'e', 'victim'), 'deep victim\n', { mode: 0o600 });
    symlinkSync('victim', join(this.dir, 'link-to-victim'));
    for (const p of ['victim', 'bin', 'sub']) {
      const r = spawnSync('setfattr', ['-n', 'user.canary', '-v', p, join(this.dir, p)]);
      if (r.status !== 0) throw new Error(`setfattr on the canary failed: ${r.stderr}`);
    }
    for (const p of [...files, 'sub', 'sub/inner', 'e', 'e/victim']) {
      chownSync(join(this.dir, p), 1234, 1234);
      utimesSync(join(this.dir, p), 1_500_000_000, 1_500_000_000);
    }
    chmodSync(this.dir, 0o755);
  }

  /** Everything observable about the canary (see the class comment). */
  snapshot(): string[] {
    const out: string[] = [];
    const walk = (rel: string) => {
      const abs = rel ? join(this.dir, rel) : this.dir;
      const st = lstatSync(abs, { bigint: true });
      out.push(
        `${rel || '.'} mode=${st.mode.toString(8)} uid=${st.uid} gid=${st.gid} rdev=${st.rdev} mtime=${st.mtimeNs} ctime=${st.ctimeNs} nlink=${st.nlink}`,
      );
      if (st.isDirectory()) for (const n of readdirSync(abs).sort()) walk(rel ? `${rel}/${n}` : n);
    };
    walk('');
    const x = spawnSync('getfattr', ['-R', '-P', '-d', '-m', '-', '-e', 'hex', '--absolute-names', this.dir], { encoding: 'utf8' });
    out.push(...x.stdout.split('\n').filter((l) => l.trim()));
    return out;
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The binary value of a `security.capability` xattr granting cap_net_raw (VFS v2). */
export const CAP_NET_RAW = Buffer.from('0100000200200000000000000000000000000000', 'hex');
