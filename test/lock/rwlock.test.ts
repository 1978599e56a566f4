/**
 * The queued rwlock (`--lock rwlock`, src/sync/rwlock.ts):
 * - the qrwlock states, scripted in one thread (ScriptedWait: a wait that is
 *   not scripted throws instead of hanging);
 * - readers and writers under real worker threads: writers exclude
 *   everybody, readers overlap, a waiting writer is served before a reader
 *   that came after it;
 * - lock_stat: read acquisitions on rows of their own, per-holder hold
 *   times, counts that add up; spinlock rows as before.
 * The sim-mode tests are in rwlock-sim.test.ts. Needs `npm run build` (the
 * workers load dist/).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { RwLock, QR_BIAS, QW_LOCKED, QW_WAITING } from '../../src/sync/rwlock.js';
import { LOCKW, TICKET_MASK, TICKET_SHIFT } from '../../src/sync/spinlock.js';
import { Actor } from '../../src/sync/actor.js';
import { FreeSched } from '../../src/sync/sched.js';
import { LockStats, formatLockTable, mergeLockStats, emptyLockReport } from '../../src/sync/lockstat.js';
import { LS, READ_ROW } from '../../src/sync/locksites.js';
import { formatLockTableFor } from '../../stress/report.js';
import { describeWait, mmuLockHolder, runThreads } from '../../stress/run.js';
import { defaultOptions } from '../../stress/options.js';
import { makeWorld } from '../helpers.js';
import { busy, expectLockCorrect, makeTestLock, READERS_N, requireBuild, ScriptedWait, SHARED_WORDS, spawn, W } from './support.js';

const CNTS = LOCKW.CNTS;
const WAIT_LOCK = LOCKW.WAIT_LOCK;

/** A fresh rwlock over test words, and actors whose every wait must be scripted. */
function setup(stats: LockStats | null = null) {
  const m = new Int32Array(new SharedArrayBuffer(SHARED_WORDS * 4));
  const lock = new RwLock(m, 0, W.READERS, READERS_N, stats);
  const actor = (id: number) => {
    const sched = new ScriptedWait(m);
    return { actor: new Actor(id, sched), sched };
  };
  return { m, lock, actor };
}

/** Tickets taken and not yet served on the qrwlock's wait_lock (0: nobody queued). */
function queued(m: Int32Array): number {
  const w = Atomics.load(m, WAIT_LOCK);
  return ((w >>> TICKET_SHIFT) - (w & TICKET_MASK)) & TICKET_MASK;
}

describe('rwlock states (scripted, one thread)', () => {
  it('readers share the lock; the write side cannot be taken while they hold it', () => {
    const { m, lock, actor } = setup();
    const [{ actor: a }, { actor: b }, { actor: w }] = [actor(1), actor(2), actor(3)];
    lock.readLock(a, LS.fault);
    lock.readLock(b, LS.harvest); // no wait: ScriptedWait would throw
    expect([m[CNTS], lock.readers(), lock.readHolders(), lock.readSite(a.id), lock.readSite(b.id), lock.readSite(w.id)]).toEqual([2 * QR_BIAS, 2, [1, 2], LS.fault, LS.harvest, -1]);
    expect([lock.readHeldBy(a), lock.readHeldBy(b), lock.readHeldBy(w), lock.heldBy(a), lock.owner()]).toEqual([true, true, false, false, -1]);
    expect(lock.tryLock(w, LS.other)).toBe(false);
    expect(lock.readTryLock(w, LS.other)).toBe(true);
    expect(lock.readers()).toBe(3);
    lock.readUnlock(w);
    expect(lock.isContended()).toBe(false);
    lock.readUnlock(a);
    lock.readUnlock(b);
    expect([m[CNTS], lock.readers(), lock.readHolders()]).toEqual([0, 0, []]);
    expect(lock.tryLock(w, LS.other)).toBe(true);
    expect([m[CNTS], lock.owner(), lock.readTryLock(a, LS.fault), m[CNTS]]).toEqual([QW_LOCKED, 3, false, QW_LOCKED]);
    lock.unlock(w);
    expect(m[CNTS]).toBe(0);
  });

  it('a writer waits for the readers to drain, queued on wait_lock with _QW_WAITING set; meanwhile new readers are refused the fast path', () => {
    const { m, lock, actor } = setup();
    const [{ actor: a }, { actor: w, sched: sw }, { actor: c }] = [actor(1), actor(2), actor(3)];
    lock.readLock(a, LS.fault);
    let seen: unknown = null;
    sw.onWait = () => {
      seen = { cnts: m[CNTS], queued: queued(m), contended: lock.isContended(), owner: lock.owner(), cTry: lock.readTryLock(c, LS.fault), cntsAfterTry: m[CNTS] };
      lock.readUnlock(a); // the last reader leaves: cnts == _QW_WAITING
    };
    lock.lock(w, LS.harvest);
    expect(sw.waitedOn).toEqual([CNTS]);
    expect(seen).toEqual({ cnts: QR_BIAS | QW_WAITING, queued: 1, contended: true, owner: -1, cTry: false, cntsAfterTry: QR_BIAS | QW_WAITING });
    expect([m[CNTS], lock.owner(), lock.heldBy(w), queued(m), lock.isContended()]).toEqual([QW_LOCKED, 2, true, 0, false]);
    lock.unlock(w);
    expect(m[CNTS]).toBe(0);
  });

  it('a reader arriving while a writer holds the lock waits (at the head of the queue) and gets in once the writer unlocks', () => {
    const { m, lock, actor } = setup();
    const [{ actor: w }, { actor: c, sched: sc }] = [actor(1), actor(2)];
    lock.lock(w, LS.harvest);
    let seen: unknown = null;
    sc.onWait = () => {
      seen = { held: lock.readHeldBy(c), readers: lock.readers(), cnts: m[CNTS], queued: queued(m), owner: lock.owner() };
      lock.unlock(w);
    };
    lock.readLock(c, LS.fault);
    expect(sc.waitedOn).toEqual([CNTS]);
    expect(seen).toEqual({ held: false, readers: 0, cnts: QR_BIAS | QW_LOCKED, queued: 1, owner: 1 });
    expect([lock.readHeldBy(c), lock.readers(), m[CNTS], queued(m), lock.owner()]).toEqual([true, 1, QR_BIAS, 0, -1]);
    lock.readUnlock(c);
    expect(m[CNTS]).toBe(0);
  });

  it('a writer behind a writer waits with _QW_WAITING set and takes the lock at its release', () => {
    const { m, lock, actor } = setup();
    const [{ actor: w1 }, { actor: w2, sched: s2 }, { actor: c }] = [actor(1), actor(2), actor(3)];
    lock.lock(w1, LS.harvest);
    let seen: unknown = null;
    s2.onWait = () => {
      seen = { cnts: m[CNTS], cTry: lock.readTryLock(c, LS.fault), owner: lock.owner() };
      lock.unlock(w1);
    };
    lock.lock(w2, LS['wp-enable']);
    expect(seen).toEqual({ cnts: QW_LOCKED | QW_WAITING, cTry: false, owner: 1 });
    expect([m[CNTS], lock.owner(), m[LOCKW.OWNER_SITE]]).toEqual([QW_LOCKED, 2, LS['wp-enable']]);
    lock.unlock(w2);
  });

  it('write unlock clears the wlocked byte alone: the bias of a reader passing through the fast path survives', () => {
    const { m, lock, actor } = setup();
    const { actor: w } = actor(1);
    lock.lock(w, LS.harvest);
    Atomics.add(m, CNTS, QR_BIAS); // a reader's fast-path add, about to back out in the slow path
    lock.unlock(w);
    expect(m[CNTS]).toBe(QR_BIAS);
  });

  it('unlock of a side an actor does not hold throws, and changes nothing; so does a recursive read_lock', () => {
    const { m, lock, actor } = setup();
    const [{ actor: a }, { actor: b }, { actor: w }] = [actor(1), actor(2), actor(3)];
    expect(() => lock.readUnlock(a)).toThrow(/actor 1 read-unlocks a lock it does not hold for read/);
    lock.readLock(a, LS.fault);
    expect(() => lock.unlock(a)).toThrow(/actor 1 unlocks a lock it does not hold \(owner -1\) \(it holds the read side: readUnlock\)/);
    expect(() => lock.readUnlock(b)).toThrow(/actor 2 read-unlocks a lock it does not hold for read \(readers 1, owner -1\)/);
    expect(() => lock.readLock(a, LS.fault)).toThrow(/recursive read_lock/);
    expect([m[CNTS], lock.readers(), lock.readHeldBy(a)]).toEqual([QR_BIAS, 1, true]);
    lock.readUnlock(a);
    lock.lock(w, LS.harvest);
    expect(() => lock.readUnlock(w)).toThrow(/holds the write side: unlock/);
    expect(() => lock.unlock(a)).toThrow(/actor 1 unlocks a lock it does not hold \(owner 3\)/);
    expect([m[CNTS], lock.owner()]).toEqual([QW_LOCKED, 3]);
    lock.unlock(w);
    expect([m[CNTS], lock.owner(), lock.readers()]).toEqual([0, -1, 0]);
  });

  for (const kind of ['ticket', 'tas'] as const) {
    it(`${kind}: no read side: read_lock is the exclusive lock (readers() 0, readHeldBy = heldBy)`, () => {
      const m = new Int32Array(new SharedArrayBuffer(SHARED_WORDS * 4));
      const lock = makeTestLock(kind, m);
      const [a, b] = [new Actor(1, new ScriptedWait(m)), new Actor(2, new ScriptedWait(m))];
      lock.readLock(a, LS.fault);
      expect([lock.owner(), lock.heldBy(a), lock.readHeldBy(a), lock.readers(), lock.readHolders(), lock.readSite(a.id)]).toEqual([1, true, true, 0, [], -1]);
      expect(lock.readTryLock(b, LS.fault)).toBe(false);
      expect(() => lock.readUnlock(b)).toThrow(/does not hold/);
      lock.readUnlock(a);
      expect(lock.owner()).toBe(-1);
    });
  }

  it('in a VM: mmuLockIsContended() is rwlock_is_contended() (somebody queued on wait_lock); the watchdog names read holders', () => {
    const w = makeWorld({ lock: 'rwlock', vcpus: 2 });
    const { kvm, host } = w;
    const L = kvm.layout;
    expect(kvm.mmuLock).toBeInstanceOf(RwLock);
    const sv = new ScriptedWait(kvm.m);
    const v0 = new Actor(0, sv);
    kvm.mmuLock.lock(host, LS['notifier-start']);
    expect(kvm.mmuLockIsContended()).toBe(false); // held, nobody waits
    let during: unknown = null;
    sv.onWait = () => {
      during = { contended: kvm.mmuLockIsContended(), desc: describeWait(kvm, sv.waitedOn[0]) };
      kvm.mmuLock.unlock(host);
    };
    kvm.mmuLock.readLock(v0, LS.fault);
    expect(during).toEqual({ contended: true, desc: 'spinning on mmu_lock (held by hostmm at notifier-start)' });
    expect(kvm.mmuLockIsContended()).toBe(false);
    expect(kvm.m[L.mmuLockReaders + v0.id]).toBe(LS.fault + 1);
    // A reader that never unlocks is named where the owner word says "none".
    expect(kvm.mmuLock.owner()).toBe(-1);
    expect(mmuLockHolder(kvm)).toBe('none (read-held by vcpu0 at fault)');
    expect(describeWait(kvm, L.mmuLock + LOCKW.CNTS)).toBe('spinning on mmu_lock (held by none (read-held by vcpu0 at fault))');
    kvm.mmuLock.readUnlock(v0);
    expect(mmuLockHolder(kvm)).toBe('none');
  });
});

/** Wait (Atomics.wait on the word, no sleep) until pred(m[index]) holds. */
function waitUntil(m: Int32Array, index: number, pred: (v: number) => boolean, what: string, timeoutMs = 10_000): void {
  const limit = Date.now() + timeoutMs;
  for (;;) {
    const v = Atomics.load(m, index);
    if (pred(v)) return;
    if (Date.now() > limit) throw new Error(`timed out waiting for ${what} (word ${index} is ${v})`);
    Atomics.wait(m, index, v, 20);
  }
}

describe('rwlock under worker threads', () => {
  beforeAll(requireBuild);

  it('3 readers and 2 writers x 3000: writers exclude readers and writers, readers overlap', async () => {
    const READERS = 3;
    const WRITERS = 2;
    const ITERS = 3000;
    const sab = new SharedArrayBuffer(SHARED_WORDS * 4);
    const m = new Int32Array(sab);
    const roles = [...Array(READERS).fill('reader'), ...Array(WRITERS).fill('writer')];
    const runs = roles.map((role, i) => spawn<{ phase1Max: number; phase1Met: boolean; max: number }>({ job: 'rw', sab, id: i + 1, role, iters: ITERS, readers: READERS, workers: roles.length }));
    const res = await Promise.all(runs.map((r) => r.result));
    expect({ overlaps: m[W.OVERLAPS], torn: m[W.TORN], counter: m[W.COUNTER] }).toEqual({ overlaps: 0, torn: 0, counter: WRITERS * ITERS });
    // Phase 1: every reader waited at a barrier inside the read side for the others.
    const readers = res.slice(0, READERS);
    expect(readers.map((r) => [r.phase1Met, r.phase1Max])).toEqual(Array(READERS).fill([true, READERS]));
    expect(Math.max(...readers.map((r) => r.max))).toBeGreaterThanOrEqual(1);
    expect([Atomics.load(m, CNTS), queued(m), Atomics.load(m, LOCKW.OWNER)]).toEqual([0, 0, 0]);
    expect(Array.from(m.subarray(W.READERS, W.READERS + READERS_N)).every((x) => x === 0)).toBe(true);
  });

  it('fair: with a reader holding the lock, a waiting writer blocks a later reader, which gets in after the writer', async () => {
    const sab = new SharedArrayBuffer(SHARED_WORDS * 4);
    const m = new Int32Array(sab);
    const lock = makeTestLock('rwlock', m);
    const main = new Actor(0, new FreeSched(m));
    lock.readLock(main, LS.fault);
    const writer = spawn<null>({ job: 'rwOrder', sab, id: 1, role: 'writer' });
    Atomics.store(m, W.GO + 1, 1);
    Atomics.notify(m, W.GO + 1);
    waitUntil(m, CNTS, (c) => (c & QW_WAITING) !== 0, 'the writer to set _QW_WAITING');
    const reader = spawn<null>({ job: 'rwOrder', sab, id: 2, role: 'reader' });
    Atomics.store(m, W.GO + 2, 1);
    Atomics.notify(m, W.GO + 2);
    waitUntil(m, WAIT_LOCK, () => queued(m) >= 2, 'the reader to queue behind the writer on wait_lock');
    expect([lock.readers(), lock.readHolders(), Atomics.load(m, W.LOG_LEN)]).toEqual([1, [0], 0]);
    expect(lock.readTryLock(new Actor(3, new FreeSched(m)), LS.fault)).toBe(false);
    lock.readUnlock(main);
    await Promise.all([writer.result, reader.result]);
    expect(Array.from(m.subarray(W.LOG, W.LOG + 2))).toEqual([1, 2]);
    expect(m[W.WLOG] - 1).toBe(0); // no reader inside while the writer held the lock
    expect([Atomics.load(m, CNTS), queued(m)]).toEqual([0, 0]);
  });
});

/** The first cell of a table line (cells are apart by two spaces or more; a name has single spaces). */
function nameCell(line: string): string {
  return /^( *\S+(?: \S+)*)/.exec(line)?.[1] ?? '';
}

describe('--lock rwlock runs in threads mode', () => {
  beforeAll(requireBuild);
  const SEED = 8;
  it(`a short mixed run, profile fixed, passes with the lock's checks (seed ${SEED})`, async () => {
    const o = { ...defaultOptions(), scenario: 'mixed', profile: 'fixed' as const, lock: 'rwlock' as const, vcpus: 2, guestMem: 16 * 1024 * 1024, durationMs: 300, seed: SEED, quiet: true, checkEveryMs: 100 };
    const r = await runThreads(o);
    expectLockCorrect(r, 'rwlock', SEED);
    expect([r.result, r.quiescentChecks > 0], `seed ${SEED}; rerun: ${r.replay}`).toEqual(['pass', true]);
    expect(r.lock.sides.write.acquisitions, 'the current profiles take the write side only').toBe(r.lock.acquisitions);
  });
});

describe('rwlock lock_stat', () => {
  const ROUNDS = 10;
  const US = 100;

  it(`read and write acquisitions on rows of their own; each reader's hold timed on its own; counts add up (${ROUNDS} rounds)`, () => {
    const stats = new LockStats(1);
    const { lock, actor } = setup(stats);
    const [{ actor: a }, { actor: b }, { actor: w }, { actor: c, sched: sc }] = [actor(1), actor(2), actor(3), actor(4)];
    for (let r = 0; r < ROUNDS; r++) {
      // Two readers, overlapping: each holds 2 x US, A from before B's lock to after... B's own start.
      lock.readLock(a, LS.fault);
      busy(US);
      lock.readLock(b, LS.fault);
      busy(US);
      lock.readUnlock(a);
      busy(US);
      lock.readUnlock(b);
      // A writer at harvest; a reader (C) contended behind it, waiting US.
      lock.lock(w, LS.harvest);
      sc.onWait = () => {
        busy(US);
        lock.unlock(w);
      };
      lock.readLock(c, LS.fault);
      lock.retag(c, LS.dissolve); // a reader's re-tag moves its read acquisition
      busy(US);
      lock.readUnlock(c);
    }
    const rep = mergeLockStats('rwlock', [stats.snapshot()]);
    const row = (site: string, side: string) => rep.sites.find((s) => s.site === site && s.side === side);
    expect(rep.sites.map((s) => `${s.site}/${s.side}`)).toEqual(['harvest/write', 'fault/read', 'dissolve/read']);
    const fr = row('fault', 'read')!;
    const dr = row('dissolve', 'read')!;
    const hw = row('harvest', 'write')!;
    expect([fr.acquisitions, fr.contentions, dr.acquisitions, dr.contentions, hw.acquisitions, hw.contentions]).toEqual([2 * ROUNDS, 0, ROUNDS, ROUNDS, ROUNDS, 0]);
    // Per-holder hold timing: A and B each held 2 x US though their holds overlapped.
    expect(fr.holdTimed).toBe(2 * ROUNDS);
    expect(fr.holdNs.min).toBeGreaterThanOrEqual(2 * US * 1000);
    expect(dr.waitNs.min).toBeGreaterThanOrEqual(US * 1000);
    expect(dr.holdNs.min).toBeGreaterThanOrEqual(US * 1000);
    expect(hw.holdNs.min).toBeGreaterThanOrEqual(US * 1000); // across C's wait
    // Sides and totals add up.
    const sum = (side: string, k: 'acquisitions' | 'contentions' | 'bounces') => rep.sites.filter((s) => s.side === side).reduce((x, s) => x + s[k], 0);
    for (const k of ['acquisitions', 'contentions', 'bounces'] as const) {
      expect([rep.sides.read[k], rep.sides.write[k]], k).toEqual([sum('read', k), sum('write', k)]);
      expect(rep[k], k).toBe(rep.sides.read[k] + rep.sides.write[k]);
    }
    expect([rep.sides.read.acquisitions, rep.sides.write.acquisitions]).toEqual([3 * ROUNDS, ROUNDS]);
    expect(rep.sides.read.holdNs.total).toBeCloseTo(fr.holdNs.total + dr.holdNs.total, 0);
    expect(rep.holdNs.total).toBeCloseTo(rep.sides.read.holdNs.total + rep.sides.write.holdNs.total, 0);
    // The raw rows: read rows at READ_ROW + site.
    const snap = stats.snapshot();
    expect([snap.sites[READ_ROW + LS.fault].acq, snap.sites[LS.fault].acq, snap.sites[LS.harvest].acq]).toEqual([2 * ROUNDS, 0, ROUNDS]);
    // The tables: a class line per side, the sites under it.
    for (const t of [formatLockTable(rep), formatLockTableFor(rep, 'threads')]) {
      const names = t.split('\n').map(nameCell);
      expect(names.filter((n) => /^(mmu_lock(-[WR])?|  \S+ \([WR]\))$/.test(n))).toEqual(['mmu_lock', 'mmu_lock-W', '  harvest (W)', 'mmu_lock-R', '  fault (R)', '  dissolve (R)']);
    }
  });

  it('a spinlock keeps the rows it always had: every acquisition exclusive, no side lines in the table; the report only gains fields', () => {
    const stats = new LockStats(1);
    const m = new Int32Array(new SharedArrayBuffer(SHARED_WORDS * 4));
    const lock = makeTestLock('ticket', m, stats);
    const a = new Actor(1, new FreeSched(m));
    lock.readLock(a, LS.fault); // no read side: spin_lock()
    lock.readUnlock(a);
    lock.lock(a, LS.harvest);
    lock.unlock(a);
    const rep = mergeLockStats('ticket', [stats.snapshot()]);
    expect(rep.sites.map((s) => [s.site, s.side, s.acquisitions])).toEqual([
      ['fault', 'write', 1],
      ['harvest', 'write', 1],
    ]);
    expect([rep.sides.write.acquisitions, rep.sides.read.acquisitions]).toEqual([2, 0]);
    const lines = formatLockTable(rep).split('\n');
    expect(lines.slice(2).map(nameCell)).toEqual(['mmu_lock', '  fault', '  harvest']);
    // The JSON contract: every field there was, and `side`/`sides` added.
    const old = ['kind', 'enabled', 'holdSampleEvery', 'acquisitions', 'contentions', 'bounces', 'conBounces', 'waitNs', 'holdNs', 'sites'];
    expect(Object.keys(rep)).toEqual([...old, 'sides']);
    expect(Object.keys(emptyLockReport('tas'))).toEqual([...old, 'sides']);
    expect(Object.keys(rep.sites[0])).toEqual(['site', 'side', 'acquisitions', 'contentions', 'bounces', 'conBounces', 'waitNs', 'holdNs', 'holdTimed']);
  });
});
