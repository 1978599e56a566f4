/** Shared pieces of the lock tests: worker threads running test/lock/worker.mjs, a scripted Sched. */
import { existsSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { expect } from 'vitest';
import type { Sched } from '../../src/sync/sched.js';
import type { LockKind, ProfileName } from '../../src/config.js';
import type { LockStatsSink, SpinLock } from '../../src/sync/spinlock.js';
import { createLock } from '../../src/sync/locks.js';
import { runThreads } from '../../stress/run.js';
import { defaultOptions } from '../../stress/options.js';
import type { Report } from '../../stress/report.js';

const WORKER = new URL('./worker.mjs', import.meta.url);

/**
 * The profiles the lock tests run under: the lock's correctness does not
 * depend on the protocol version, so one of each kind of entry update is
 * enough (v14, 4.0's write-then-flush, the newest).
 */
export const LOCK_TEST_PROFILES: readonly ProfileName[] = ['v14', 'fixed'];

/** Shared words used by worker.mjs (after the lock block at 0..7; READERS: an rwlock's read holders, READERS_N actors). */
export const W = {
  BARRIER: 8,
  INSIDE: 9,
  OVERLAPS: 10,
  COUNTER: 11,
  LOG_LEN: 12,
  GO: 16,
  R_IN: 32,
  W_IN: 33,
  DATA_A: 35,
  DATA_B: 36,
  TORN: 37,
  BARRIER2: 38,
  BARRIER3: 39,
  WLOG: 40,
  LOG: 64,
  READERS: 192,
} as const;
export const READERS_N = 64;
export const SHARED_WORDS = 256;
/** Words of the sim-mode jobs of worker.mjs (the first 64 are the scheduler's control words, CTRL). */
export const SIMW = { LOCK: 64, READERS: 72, HANG: 96, FLAG: 97, R_IN: 98, W_IN: 99, DATA_A: 101, DATA_B: 102, TORN: 103, COUNTER: 104, OVERLAPS: 105 } as const;
export const SIM_READERS_N = 16;
export const SIM_WORDS = 128;

/** A lock of any kind over the test words: the lock block at 0, an rwlock's readers at W.READERS. */
export function makeTestLock(kind: LockKind, m: Int32Array, stats: LockStatsSink | null = null): SpinLock {
  return createLock(kind, m, 0, stats, { base: W.READERS, n: READERS_N });
}

export function requireBuild(): void {
  if (!existsSync(new URL('../../dist/src/sync/spinlock.js', import.meta.url))) {
    throw new Error('test/lock needs the compiled code: run `npm run build` first');
  }
}

/** Start a worker on one job; resolves with what it posts back. */
export function spawn<T>(data: Record<string, unknown>): { worker: Worker; result: Promise<T> } {
  const worker = new Worker(WORKER, { workerData: data });
  const result = new Promise<T>((resolve, reject) => {
    worker.once('message', (v: T) => resolve(v));
    worker.once('error', reject);
    worker.once('exit', (code) => {
      if (code !== 0) reject(new Error(`worker exited with code ${code}`));
    });
  });
  return { worker, result };
}

/** Block the calling thread until m[index] >= value (Atomics, no sleep). */
export function waitAtLeast(m: Int32Array, index: number, value: number, timeoutMs = 20_000): void {
  const limit = Date.now() + timeoutMs;
  for (;;) {
    const v = Atomics.load(m, index);
    if (v >= value) return;
    if (Date.now() > limit) throw new Error(`timed out waiting for word ${index} to reach ${value} (it is ${v})`);
    Atomics.wait(m, index, v, 50);
  }
}

/**
 * A single-threaded Sched for constructed cases: `onWait` is what the
 * other actor does while this one waits (it must change the word).
 */
export class ScriptedWait implements Sched {
  onWait: (() => void) | null = null;
  waits = 0;
  /** The words of the scripted waits, in order. */
  readonly waitedOn: number[] = [];
  /** Scheduling points passed: a lock that spins on points instead of waiting would hang the one thread. */
  private points = 0;
  constructor(private readonly m: Int32Array) {}
  point(_site: number): void {
    if (++this.points > ScriptedWait.MAX_POINTS) throw new Error(`${ScriptedWait.MAX_POINTS} scheduling points without a wait: spinning (a single-threaded test would hang)`);
  }
  static readonly MAX_POINTS = 1_000_000;
  idle(_ms: number): void {}
  waitWhile(index: number, value: number, _site: number): void {
    if (Atomics.load(this.m, index) !== value) return;
    this.waits++;
    this.waitedOn.push(index);
    if (!this.onWait) throw new Error(`unscripted wait on word ${index}: a single-threaded test would hang`);
    const f = this.onWait;
    this.onWait = null;
    f();
  }
}

/** Busy-wait `us` microseconds (a known minimum duration for wait and hold times). */
export function busy(us: number): void {
  const end = performance.now() + us / 1000;
  while (performance.now() < end) {
    /* spin */
  }
}

/**
 * Lock correctness under one scenario and profile, threads mode: a short
 * run must end cleanly (no harness failure: no worker crash, no hang), with
 * no `lock-held` or `progress` violation (a writer without mmu_lock, the
 * lock held at a stop-the-world point, a deadlock or a starving actor), and
 * lock statistics whose rows add up. Other invariants belong to the model
 * and its profiles (v14 and v15 have known defects).
 */
export async function checkLockUnderScenario(lock: LockKind, scenario: string, profile: ProfileName, seed: number): Promise<void> {
  const o = { ...defaultOptions(), scenario, profile, lock, vcpus: 2, guestMem: 16 * 1024 * 1024, durationMs: 300, seed, quiet: true, checkEveryMs: 100 };
  const r = await runThreads(o);
  expectLockCorrect(r, lock, seed);
  expect(r.quiescentChecks, `seed ${seed}; rerun: ${r.replay}`).toBeGreaterThan(0);
}

/**
 * What a run must show of its lock, whatever the mode: no harness failure,
 * no `lock-held` or `progress` violation, and lock_stat rows that add up.
 */
export function expectLockCorrect(r: Report, lock: LockKind, seed: number): void {
  const rerun = `seed ${seed}; rerun: ${r.replay}`;
  expect(r.error, rerun).toBe(null);
  expect(
    r.violations.filter((v) => v.invariant === 'lock-held' || v.invariant === 'progress').map((v) => `[${v.invariant}] ${v.message}`),
    rerun,
  ).toEqual([]);
  expect(r.lock.enabled, rerun).toBe(true);
  expect(r.lock.kind, rerun).toBe(lock);
  expect(r.lock.acquisitions, rerun).toBeGreaterThan(0);
  expect(r.lock.sites.reduce((x, s) => x + s.acquisitions, 0), rerun).toBe(r.lock.acquisitions);
  expect(r.lock.sites.reduce((x, s) => x + s.contentions, 0), rerun).toBe(r.lock.contentions);
}
