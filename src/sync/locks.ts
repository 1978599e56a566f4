/**
 * Building a lock of a `--lock` kind over a lock block (LOCK_WORDS words).
 * An rwlock also needs its read holders' region: one word per actor id.
 */
import type { LockKind } from '../config.js';
import { TasLock, TicketLock, type LockStatsSink, type SpinLock } from './spinlock.js';
import { RwLock } from './rwlock.js';

/** Where an rwlock keeps which actors hold its read side: `n` words from `base`, one per actor id. */
export interface ReadersRegion {
  base: number;
  n: number;
}

export function createLock(kind: LockKind, m: Int32Array, base: number, stats: LockStatsSink | null, readers: ReadersRegion | null = null): SpinLock {
  switch (kind) {
    case 'ticket':
      return new TicketLock(m, base, stats);
    case 'tas':
      return new TasLock(m, base, stats);
    case 'rwlock':
      if (readers === null) throw new Error('an rwlock needs a readers region (one word per actor)');
      return new RwLock(m, base, readers.base, readers.n, stats);
    default:
      throw new Error(`unknown lock kind '${kind as string}'`);
  }
}
