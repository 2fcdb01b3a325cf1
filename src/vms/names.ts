import { randomBytes, randomInt } from 'node:crypto';

/** Generated VM names: adjective-noun-NN (valid `Name`, readable in `ps`). */
const ADJ = ['brave', 'calm', 'eager', 'fuzzy', 'gentle', 'happy', 'jolly', 'keen', 'lucky', 'merry', 'nimble', 'proud', 'quick', 'sunny', 'tidy', 'witty'];
const NOUN = ['otter', 'falcon', 'badger', 'lynx', 'heron', 'panda', 'koala', 'walrus', 'gecko', 'bison', 'marten', 'puffin', 'tapir', 'yak', 'zebra', 'moose'];

export function generateName(taken: (n: string) => boolean): string {
  for (let i = 0; i < 50; i++) {
    const n = `${ADJ[randomInt(ADJ.length)]}-${NOUN[randomInt(NOUN.length)]}-${randomInt(10, 100)}`;
    if (!taken(n)) return n;
  }
  return `vm-${randomBytes(4).toString('hex')}`;
}

/** A VM id: 20 hex chars (the tap name uses the first 10). */
export function newVmId(): string {
  return randomBytes(10).toString('hex');
}
