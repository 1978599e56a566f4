/**
 * Every lock kind under real worker threads: mutual exclusion (an rwlock's
 * write side here; its read side in rwlock.test.ts), and the ticket lock's
 * FIFO order. Needs `npm run build` (the workers load dist/).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { LOCK_KINDS } from '../../src/config.js';
import { TicketLock, LOCKW, TICKET_SHIFT, TICKET_MASK } from '../../src/sync/spinlock.js';
import { Actor } from '../../src/sync/actor.js';
import { FreeSched, SPINS_LONG, SPINS_SHORT, spinsFor } from '../../src/sync/sched.js';
import { mergeLockStats, type LockStatsSnapshot } from '../../src/sync/lockstat.js';
import { LOCK_SITE_NAMES } from '../../src/sync/locksites.js';
import { makeTestLock, requireBuild, spawn, SHARED_WORDS, W, waitAtLeast } from './support.js';

beforeAll(requireBuild);

describe('mutual exclusion under worker threads', () => {
  const WORKERS = 3;
  const ITERS = 4000;
  for (const kind of LOCK_KINDS) {
    for (const stats of [false, true]) {
      it(`${kind}: ${WORKERS} threads x ${ITERS} acquisitions never overlap (statistics ${stats ? 'on' : 'off'})`, async () => {
        const sab = new SharedArrayBuffer(SHARED_WORDS * 4);
        const m = new Int32Array(sab);
        const runs = Array.from({ length: WORKERS }, (_, id) =>
          spawn<LockStatsSnapshot | null>({ job: 'mutex', sab, kind, id, iters: ITERS, workers: WORKERS, stats, holdSample: 16 }),
        );
        const snaps = await Promise.all(runs.map((r) => r.result));
        expect({ overlaps: m[W.OVERLAPS], counter: m[W.COUNTER] }).toEqual({ overlaps: 0, counter: WORKERS * ITERS });
        expect(Atomics.load(m, LOCKW.OWNER)).toBe(0);
        if (kind === 'ticket') {
          const word = Atomics.load(m, LOCKW.NEXT);
          expect(word >>> TICKET_SHIFT).toBe(word & TICKET_MASK); // every ticket served
        } else if (kind === 'tas') {
          expect(Atomics.load(m, LOCKW.NEXT)).toBe(0);
          expect(Atomics.load(m, LOCKW.WAITERS)).toBe(0);
        } else {
          expect(Atomics.load(m, LOCKW.CNTS)).toBe(0); // no reader, no writer, nobody waiting
          const wl = Atomics.load(m, LOCKW.WAIT_LOCK);
          expect(wl >>> TICKET_SHIFT).toBe(wl & TICKET_MASK); // the queue is empty
        }
        if (stats) {
          // Worker i takes the lock at site i % 3: the counts add up per site.
          const r = mergeLockStats(kind, snaps.filter((s): s is LockStatsSnapshot => s !== null));
          expect(r.acquisitions).toBe(WORKERS * ITERS);
          expect(r.sites.map((s) => [s.site, s.acquisitions])).toEqual([0, 1, 2].map((i) => [LOCK_SITE_NAMES[i], ITERS]));
          expect(r.contentions).toBeLessThanOrEqual(r.acquisitions);
          expect(r.bounces).toBeGreaterThan(0); // three threads took turns
        } else {
          expect(snaps).toEqual([null, null, null]);
        }
      });
    }
  }
});

describe('ticket lock', () => {
  it('serves tickets in FIFO order: waiters are served in the order they took their tickets', async () => {
    const K = 5;
    const sab = new SharedArrayBuffer(SHARED_WORDS * 4);
    const m = new Int32Array(sab);
    const main = new Actor(0, new FreeSched(m));
    const lock = new TicketLock(m, 0);
    lock.lock(main, 0);
    const runs = [];
    for (let id = 1; id <= K; id++) {
      runs.push(spawn<null>({ job: 'fifo', sab, id }));
      Atomics.store(m, W.GO + id, 1);
      Atomics.notify(m, W.GO + id);
      // Worker `id` has taken its ticket once `next` has moved past it.
      for (;;) {
        const word = Atomics.load(m, LOCKW.NEXT);
        if (word >>> TICKET_SHIFT >= id + 1) break;
        Atomics.wait(m, LOCKW.NEXT, word, 50);
      }
    }
    lock.unlock(main);
    await Promise.all(runs.map((r) => r.result));
    waitAtLeast(m, W.LOG_LEN, K);
    expect(Array.from(m.subarray(W.LOG, W.LOG + K))).toEqual([1, 2, 3, 4, 5]);
  });

  it('16-bit tickets wrap: owner and next roll over from 0xffff to 0 without carrying', () => {
    const m = new Int32Array(new SharedArrayBuffer(SHARED_WORDS * 4));
    const a = new Actor(0, new FreeSched(m));
    const lock = new TicketLock(m, 0);
    m[LOCKW.NEXT] = (0xfffe << TICKET_SHIFT) | 0xfffe;
    for (let i = 0; i < 5; i++) {
      lock.lock(a, 0);
      expect(lock.heldBy(a)).toBe(true);
      lock.unlock(a);
      const word = m[LOCKW.NEXT];
      expect([word >>> TICKET_SHIFT, word & TICKET_MASK]).toEqual([(0xfffe + i + 1) & 0xffff, (0xfffe + i + 1) & 0xffff]);
    }
  });
});

describe('tryLock', () => {
  for (const kind of LOCK_KINDS) {
    it(`${kind}: takes a free lock, and fails without waiting on a held one${kind === 'ticket' ? ' or one with a ticket outstanding' : ''}`, () => {
      const m = new Int32Array(new SharedArrayBuffer(SHARED_WORDS * 4));
      const a = new Actor(0, new FreeSched(m));
      const b = new Actor(1, new FreeSched(m));
      const lock = makeTestLock(kind, m);
      expect(lock.tryLock(a, 0)).toBe(true);
      expect(lock.heldBy(a)).toBe(true);
      expect(lock.tryLock(b, 0)).toBe(false);
      lock.unlock(a);
      expect(lock.owner()).toBe(-1);
      if (kind === 'ticket') {
        Atomics.add(m, LOCKW.NEXT, 1 << TICKET_SHIFT); // a waiter's ticket, not yet served
        expect(lock.tryLock(b, 0)).toBe(false);
        Atomics.sub(m, LOCKW.NEXT, 1 << TICKET_SHIFT);
      }
      expect(lock.tryLock(b, 0)).toBe(true);
      lock.unlock(b);
    });
  }
});

describe('waiting', () => {
  it('spins long only while the vCPUs have a core each', () => {
    expect([spinsFor(1, 2), spinsFor(2, 2), spinsFor(3, 2), spinsFor(64, 2), spinsFor(8, 8)]).toEqual([SPINS_LONG, SPINS_LONG, SPINS_SHORT, SPINS_SHORT, SPINS_LONG]);
    expect(SPINS_LONG).toBeGreaterThan(SPINS_SHORT);
  });
});

describe('every kind', () => {
  for (const kind of LOCK_KINDS) {
    it(`${kind}: unlock by an actor that does not hold the lock throws, and owner()/heldBy() follow the holder`, () => {
      const m = new Int32Array(new SharedArrayBuffer(SHARED_WORDS * 4));
      const sched = new FreeSched(m);
      const [a, b] = [new Actor(3, sched), new Actor(4, sched)];
      const lock = makeTestLock(kind, m);
      expect(lock.owner()).toBe(-1);
      lock.lock(a, 5);
      expect([lock.owner(), lock.heldBy(a), lock.heldBy(b), m[LOCKW.OWNER_SITE]]).toEqual([3, true, false, 5]);
      expect(() => lock.unlock(b)).toThrow(/does not hold/);
      lock.unlock(a);
      expect(lock.owner()).toBe(-1);
    });
  }
});
