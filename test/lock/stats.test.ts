/**
 * lock_stat correctness on constructed cases (single-threaded, scripted
 * contention), the sampling of hold times, re-tagging, statistics off, and
 * the merge of histograms across worker threads.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { LOCK_KINDS } from '../../src/config.js';
import { TicketLock, type SpinLock } from '../../src/sync/spinlock.js';
import { Actor } from '../../src/sync/actor.js';
import { FreeSched } from '../../src/sync/sched.js';
import { EXACT_FIRST_HOLDS, LockStats, mergeLockStats, type LockStatsSnapshot } from '../../src/sync/lockstat.js';
import { LS } from '../../src/sync/locksites.js';
import { makeWorld, wval } from '../helpers.js';
import { guestAccess } from '../../src/kvm/vcpu.js';
import { kvmEnableDirtyLogging } from '../../src/kvm/memslot.js';
import { busy, makeTestLock, requireBuild, ScriptedWait, SHARED_WORDS, spawn } from './support.js';
import type { LockKind } from '../../src/config.js';

function lockOf(kind: LockKind, m: Int32Array, stats: LockStats | null): SpinLock {
  return makeTestLock(kind, m, stats);
}

describe('statistics on a constructed case', () => {
  const ROUNDS = 20;
  const WAIT_US = 200;
  const HOLD_US = 100;
  for (const kind of LOCK_KINDS) {
    it(`${kind}: ${ROUNDS} rounds of "A holds, B waits ${WAIT_US}us, A releases, B holds ${HOLD_US}us"`, () => {
      const m = new Int32Array(new SharedArrayBuffer(SHARED_WORDS * 4));
      const stats = new LockStats(1);
      const lock = lockOf(kind, m, stats);
      const a = new Actor(1, new FreeSched(m));
      const sb = new ScriptedWait(m);
      const b = new Actor(2, sb);
      for (let r = 0; r < ROUNDS; r++) {
        lock.lock(a, LS.harvest); // uncontended; a bounce from B after the first round
        sb.onWait = () => {
          busy(WAIT_US);
          lock.unlock(a);
        };
        lock.lock(b, LS.fault); // contended: waits while A holds
        expect(sb.onWait).toBe(null); // the scripted wait happened
        busy(HOLD_US);
        lock.unlock(b);
      }
      const r = mergeLockStats(kind, [stats.snapshot()]);
      const harvest = r.sites.find((s) => s.site === 'harvest')!;
      const fault = r.sites.find((s) => s.site === 'fault')!;
      expect(r.sites.map((s) => s.site)).toEqual(['fault', 'harvest']);
      expect([harvest.acquisitions, harvest.contentions, harvest.bounces, harvest.conBounces]).toEqual([ROUNDS, 0, ROUNDS - 1, 0]);
      expect([fault.acquisitions, fault.contentions, fault.bounces, fault.conBounces]).toEqual([ROUNDS, ROUNDS, ROUNDS, ROUNDS]);
      expect([r.acquisitions, r.contentions, r.bounces, r.conBounces]).toEqual([2 * ROUNDS, ROUNDS, 2 * ROUNDS - 1, ROUNDS]);
      // Wait: contended acquisitions only, each at least WAIT_US.
      expect(harvest.waitNs.total).toBe(0);
      expect(fault.waitNs.min).toBeGreaterThanOrEqual(WAIT_US * 1000);
      expect(fault.waitNs.p50).toBeGreaterThanOrEqual(fault.waitNs.min);
      expect(fault.waitNs.p99).toBeLessThanOrEqual(fault.waitNs.max);
      expect(fault.waitNs.avg).toBeCloseTo(fault.waitNs.total / ROUNDS, 6);
      // Hold: every hold timed (sampling 1); B held HOLD_US, A held across B's wait.
      expect([fault.holdTimed, harvest.holdTimed]).toEqual([ROUNDS, ROUNDS]);
      expect(fault.holdNs.min).toBeGreaterThanOrEqual(HOLD_US * 1000);
      expect(harvest.holdNs.min).toBeGreaterThanOrEqual(WAIT_US * 1000);
      expect(fault.holdNs.avg).toBeCloseTo(fault.holdNs.total / ROUNDS, 6);
      expect(r.holdNs.total).toBeCloseTo(fault.holdNs.total + harvest.holdNs.total, 0);
      expect(r.waitNs.max).toBe(fault.waitNs.max);
    });
  }

  it('re-tagging moves the whole acquisition (count, contention, bounce, wait, hold) to the new site', () => {
    const m = new Int32Array(new SharedArrayBuffer(SHARED_WORDS * 4));
    const stats = new LockStats(1);
    const lock = new TicketLock(m, 0, stats);
    const a = new Actor(1, new FreeSched(m));
    const sb = new ScriptedWait(m);
    const b = new Actor(2, sb);
    lock.lock(a, LS['notifier-start']);
    sb.onWait = () => lock.unlock(a);
    lock.lock(b, LS.fault);
    lock.retag(b, LS.dissolve);
    lock.unlock(b);
    lock.lock(b, LS.fault); // a plain fault, for contrast
    lock.unlock(b);
    const r = mergeLockStats('ticket', [stats.snapshot()]);
    const row = (site: string) => r.sites.find((s) => s.site === site)!;
    expect([row('dissolve').acquisitions, row('dissolve').contentions, row('dissolve').bounces, row('dissolve').holdTimed]).toEqual([1, 1, 1, 1]);
    expect(row('dissolve').waitNs.total).toBeGreaterThan(0);
    expect([row('fault').acquisitions, row('fault').contentions, row('fault').bounces, row('fault').waitNs.total]).toEqual([1, 0, 0, 0]);
    expect(r.acquisitions).toBe(3);
  });
});

describe('hold-time sampling', () => {
  it('a hold re-tagged to a rare site is timed even when the busy site it started at is being sampled (seed 5)', () => {
    const m = new Int32Array(new SharedArrayBuffer(SHARED_WORDS * 4));
    const stats = new LockStats(256, 5);
    const lock = new TicketLock(m, 0, stats);
    const a = new Actor(1, new FreeSched(m));
    const sb = new ScriptedWait(m);
    const b = new Actor(2, sb);
    for (let i = 0; i < EXACT_FIRST_HOLDS + 100; i++) {
      lock.lock(a, LS.fault);
      lock.unlock(a);
    }
    // a contended acquisition just before: its wait must not leak into the next one
    lock.lock(a, LS.fault);
    sb.onWait = () => lock.unlock(a);
    lock.lock(b, LS.fault);
    lock.unlock(b);
    lock.lock(a, LS.fault);
    lock.retag(a, LS.dissolve);
    busy(20);
    lock.unlock(a);
    const snap = stats.snapshot();
    expect([snap.sites[LS.dissolve].waitTotal, snap.sites[LS.dissolve].wait], 'seed 5').toEqual([0, null]);
    const r = mergeLockStats('ticket', [snap]);
    const dissolve = r.sites.find((s) => s.site === 'dissolve')!;
    expect([dissolve.acquisitions, dissolve.holdTimed, dissolve.contentions, dissolve.waitNs.total], 'seed 5').toEqual([1, 1, 0, 0]);
    expect(dissolve.holdNs.min, 'seed 5').toBeGreaterThanOrEqual(20_000);
    expect(r.sites.find((s) => s.site === 'fault')!.acquisitions).toBe(EXACT_FIRST_HOLDS + 102);
  });

  it('times the first holds of every site exactly, then a weighted sample that estimates the rest (seed 42)', () => {
    const seed = 42;
    const N = 16;
    const ACQ = 20_000;
    const stats = new LockStats(N, seed);
    let timedCalls = 0;
    for (let i = 0; i < ACQ; i++) {
      const w = stats.acquired(LS.fault, false, false);
      if (w !== 0) {
        timedCalls++;
        stats.timed(LS.fault, -1, 1000 + (i % 100), w);
      }
    }
    for (let i = 0; i < 10; i++) stats.timed(LS['wp-enable'], -1, 50_000, stats.acquired(LS['wp-enable'], false, false));
    const r = mergeLockStats('ticket', [stats.snapshot()]);
    const fault = r.sites.find((s) => s.site === 'fault')!;
    const wp = r.sites.find((s) => s.site === 'wp-enable')!;
    const msg = `seed ${seed}: ${timedCalls} timed holds of ${ACQ}`;
    // a rare site is exact
    expect(wp.holdTimed, msg).toBe(10);
    expect(wp.holdNs.total, msg).toBe(500_000);
    // a busy site: exact first, then about 1 in N, weighted N
    const expected = EXACT_FIRST_HOLDS + (ACQ - EXACT_FIRST_HOLDS) / N;
    expect(fault.holdTimed, msg).toBe(timedCalls);
    expect(Math.abs(timedCalls - expected) / expected, msg).toBeLessThan(0.1);
    const trueTotal = Array.from({ length: ACQ }, (_, i) => 1000 + (i % 100)).reduce((x, y) => x + y, 0);
    expect(Math.abs(fault.holdNs.total - trueTotal) / trueTotal, msg).toBeLessThan(0.1);
    expect(Math.abs(fault.holdNs.avg - trueTotal / ACQ) / (trueTotal / ACQ), msg).toBeLessThan(0.1);
    expect([fault.holdNs.min, fault.holdNs.max], msg).toEqual([1000, 1099]);
    expect(fault.acquisitions, msg).toBe(ACQ);
    expect(r.holdSampleEvery).toBe(N);
  });

  it('rejects a sampling period that is not a power of two', () => {
    expect(() => new LockStats(3)).toThrow(/power of two/);
  });
});

describe('statistics off', () => {
  for (const kind of LOCK_KINDS) {
    it(`${kind}: a VM built without a sink locks, faults and keeps no lock data`, () => {
      const w = makeWorld({ lock: kind, lockStats: false });
      const [v0] = w.vcpus;
      kvmEnableDirtyLogging(w.kvm, w.migrator, 0);
      for (let g = 0; g < 64; g++) guestAccess(w.kvm, v0, g * 2, true, wval(v0));
      expect(w.kvm.mmuLock.owner()).toBe(-1);
      // No sink anywhere: nothing to snapshot; the report says so.
      const r = mergeLockStats(kind, []);
      expect([r.acquisitions, r.sites.length]).toEqual([0, 0]);
    });
  }
});

describe('merge across worker threads', () => {
  beforeAll(requireBuild);

  it('histograms recorded in three workers merge to the same statistics as one histogram of all values', async () => {
    // values: [site, waitNs (-1: uncontended), holdNs]
    const perWorker = [0, 1, 2].map((w) =>
      Array.from({ length: 500 }, (_, i): [number, number, number] => [
        i % 3 === 0 ? LS.harvest : LS.fault,
        i % 2 === 0 ? 1000 * (w + 1) + i * 7 : -1,
        200 + w * 50 + ((i * 13) % 400),
      ]),
    );
    const snaps = await Promise.all(perWorker.map((values, id) => spawn<LockStatsSnapshot>({ job: 'record', id, values }).result));
    expect(snaps.every((s) => typeof s.sites[LS.fault].hold === 'string')).toBe(true); // encoded HdrHistograms crossed the thread boundary
    const merged = mergeLockStats('tas', snaps);

    const one = new LockStats(1);
    for (const values of perWorker) {
      for (const [site, waitNs, holdNs] of values) {
        one.acquired(site, waitNs >= 0, false);
        one.timed(site, waitNs, holdNs, 1);
      }
    }
    const single = mergeLockStats('tas', [one.snapshot()]);
    expect(merged).toEqual(single);
    const all = perWorker.flat();
    const waits = all.filter((v) => v[1] >= 0).map((v) => v[1]);
    expect(merged.contentions).toBe(waits.length);
    expect(merged.waitNs.total).toBe(waits.reduce((x, y) => x + y, 0));
    expect([merged.waitNs.min, merged.waitNs.max]).toEqual([Math.min(...waits), Math.max(...waits)]);
    const sorted = [...waits].sort((x, y) => x - y);
    const p99 = sorted[Math.ceil(0.99 * sorted.length) - 1];
    expect(Math.abs(merged.waitNs.p99 - p99) / p99).toBeLessThan(0.01); // 3 significant digits, and rank rounding
    expect(merged.acquisitions).toBe(1500);
  });
});
