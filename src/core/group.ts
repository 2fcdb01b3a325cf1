import { readFile } from 'node:fs/promises';

/*
 * The `banger` group (members may use the daemon socket and VM files). Read by the daemon
 * (socket permissions) and by vms (VM file ownership), so it lives in core.
 */

/** gid of the `banger` group from /etc/group, or undefined when it does not exist. */
export async function bangerGid(groupFile = '/etc/group'): Promise<number | undefined> {
  try {
    const text = await readFile(groupFile, 'utf8');
    for (const line of text.split('\n')) {
      const [name, , gid] = line.split(':');
      if (name === 'banger' && gid) return Number(gid);
    }
  } catch {
    /* no group file */
  }
  return undefined;
}
