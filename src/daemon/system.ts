import { readFile } from 'node:fs/promises';

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
