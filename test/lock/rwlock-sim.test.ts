/**
 * The rwlock in sim mode (src/sim/sched.ts: one actor runs at a time, and an
 * actor waiting on a word is blocked, not runnable, while the word keeps its
 * value):
 * - actors of worker.mjs (one worker each, as in a run) taking both sides
 *   under the seeded random strategy: no overlap, readers overlap, every
 *   actor finishes, and the same seed gives the same schedule;
 * - a reader behind a writer, a writer behind a reader, a reader behind a
 *   waiting writer are blocked: with the holder stuck, every actor is
 *   blocked and the scheduler hands the baton to the orchestrator (a
 *   deadlock, as a run reports it), each waiter on the word the qrwlock
 *   waits on;
 * - `--lock rwlock` sim runs (the current profiles take the write side
 *   only) pass and replay exactly.
 * Needs `npm run build`.
 */
import type { Worker } from 'node:worker_threads';
import { beforeAll, describe, expect, it } from 'vitest';
import { SimMain, SimState, type SimConfig } from '../../src/sim/sched.js';
import { LOCKW } from '../../src/sync/spinlock.js';
import { RwLock } from '../../src/sync/rwlock.js';
import { defaultOptions } from '../../stress/options.js';
import { runSim } from '../../stress/simrun.js';
import { expectLockCorrect, requireBuild, SIM_READERS_N, SIM_WORDS, SIMW, spawn } from './support.js';

type Step = [string, number?];
interface ActorSpec {
  role: 'reader' | 'writer' | 'script';
  iters?: number;
  steps?: Step[];
}
interface SimOutcome {
  done: boolean;
  /** [actor, word] of each blocked actor when the baton came back with work left (a deadlock). */
  blocked: [number, number][];
  hash: string;
  results: { id: number; max: number }[];
  m: Int32Array;
  lock: RwLock;
  /** The lock when the baton came back: read holders, write owner, cnts. */
  state: { readers: number[]; owner: number; cnts: number };
}

const CNTS = SIMW.LOCK + LOCKW.CNTS;
const WAIT_LOCK = SIMW.LOCK + LOCKW.WAIT_LOCK;

/** Run actors (one worker each) under the sim scheduler until all are done or all are blocked. */
async function simRun(seed: number, actors: ActorSpec[], timeoutMs = 20_000): Promise<SimOutcome> {
  const sab = new SharedArrayBuffer(SIM_WORDS * 4);
  const m = new Int32Array(sab);
  const cfg: SimConfig = { strategy: 'random', seed, actors: actors.length, pctDepth: 3, estimatedSteps: 10_000, checkEverySteps: 0, vcpus: actors.length, stopAtStep: null };
  const st = SimState.create(cfg);
  const workers: Worker[] = [];
  const results = actors.map((a, id) => {
    const r = spawn<{ id: number; max: number }>({ job: 'simActor', sab, simSab: st.sab, simCfg: cfg, id, role: a.role, iters: a.iters ?? 0, steps: a.steps ?? [] });
    workers.push(r.worker);
    return r.result;
  });
  const main = new SimMain(st, m);
  const limit = performance.now() + timeoutMs;
  await main.waitReady(actors.length);
  main.begin();
  const got = await main.waitTurn(() => performance.now() > limit);
  if (!got) throw new Error(`seed ${seed}: the baton did not come back within ${timeoutMs} ms (an actor spinning instead of blocking?)`);
  const done = main.allDone();
  const blocked = done ? [] : main.blocked();
  const lock = new RwLock(m, SIMW.LOCK, SIMW.READERS, SIM_READERS_N);
  const state = { readers: lock.readHolders(), owner: lock.owner(), cnts: Atomics.load(m, CNTS) };
  if (done) return { done, blocked, hash: st.hashString(), results: await Promise.all(results), m, lock, state };
  // Blocked for good: stop the workers.
  for (const r of results) r.catch(() => {});
  await Promise.all(workers.map((w) => w.terminate()));
  return { done, blocked, hash: st.hashString(), results: [], m, lock, state };
}

describe('rwlock in sim mode', () => {
  beforeAll(requireBuild);

  const SEED = 77;
  const mixed: ActorSpec[] = [
    { role: 'reader', iters: 100 },
    { role: 'reader', iters: 100 },
    { role: 'reader', iters: 100 },
    { role: 'writer', iters: 60 },
    { role: 'writer', iters: 60 },
  ];

  it(`3 readers and 2 writers, preempted inside their sections: no overlap, readers overlap, all finish; the same seed gives the same schedule (seed ${SEED})`, async () => {
    const a = await simRun(SEED, mixed);
    const msg = `seed ${SEED}, schedule ${a.hash}`;
    expect(a.done, `${msg}: blocked ${JSON.stringify(a.blocked)}`).toBe(true);
    expect({ overlaps: a.m[SIMW.OVERLAPS], torn: a.m[SIMW.TORN], counter: a.m[SIMW.COUNTER] }, msg).toEqual({ overlaps: 0, torn: 0, counter: 120 });
    const maxReaders = Math.max(...a.results.slice(0, 3).map((r) => r.max));
    expect(maxReaders, msg).toBeGreaterThanOrEqual(2);
    expect([a.m[CNTS], a.lock.readers()], msg).toEqual([0, 0]);
    const b = await simRun(SEED, mixed);
    expect([b.hash, Math.max(...b.results.slice(0, 3).map((r) => r.max))], msg).toEqual([a.hash, maxReaders]);
  });

  it('a reader behind a writer that holds the lock is blocked (on cnts)', async () => {
    // actor 0 writes and never unlocks; actor 1 reads once actor 0 holds
    const o = await simRun(5, [{ role: 'script', steps: [['write'], ['set', SIMW.FLAG], ['hang']] }, { role: 'script', steps: [['waitSet', SIMW.FLAG], ['read']] }]);
    expect(o.done).toBe(false);
    expect(o.blocked).toEqual([
      [0, SIMW.HANG],
      [1, CNTS],
    ]);
    expect(o.state).toEqual({ readers: [], owner: 0, cnts: 0x200 | 0xff });
  });

  it('a writer behind a reader is blocked (on cnts, _QW_WAITING set)', async () => {
    const o = await simRun(6, [{ role: 'script', steps: [['read'], ['set', SIMW.FLAG], ['hang']] }, { role: 'script', steps: [['waitSet', SIMW.FLAG], ['write']] }]);
    expect(o.done).toBe(false);
    expect(o.blocked).toEqual([
      [0, SIMW.HANG],
      [1, CNTS],
    ]);
    expect(o.state).toEqual({ readers: [0], owner: -1, cnts: 0x200 | 0x100 });
  });

  it('a reader behind a waiting writer is blocked (queued on wait_lock), though only a reader holds the lock', async () => {
    const o = await simRun(7, [
      { role: 'script', steps: [['read'], ['set', SIMW.FLAG], ['hang']] },
      { role: 'script', steps: [['waitSet', SIMW.FLAG], ['write']] },
      { role: 'script', steps: [['waitWriterWaiting'], ['read']] },
    ]);
    expect(o.done).toBe(false);
    expect(o.blocked).toEqual([
      [0, SIMW.HANG],
      [1, CNTS],
      [2, WAIT_LOCK],
    ]);
    expect(o.state).toEqual({ readers: [0], owner: -1, cnts: 0x200 | 0x100 });
  });

  const RUN_SEED = 21;
  it(`--lock rwlock sim run passes, waits on the lock, and replays exactly (mixed, profile fixed, seed ${RUN_SEED})`, async () => {
    for (const scenario of ['mixed']) {
      const o = { ...defaultOptions(), mode: 'sim' as const, scenario, profile: 'fixed' as const, lock: 'rwlock' as const, vcpus: 2, guestMem: 8 * 1024 * 1024, ops: 2000, seed: RUN_SEED, quiet: true };
      const r = await runSim(o);
      expectLockCorrect(r, 'rwlock', RUN_SEED);
      expect(r.result, `${scenario}: ${r.replay}`).toBe('pass');
      expect(r.lock.contentions, `${scenario}: contended acquisitions; ${r.replay}`).toBeGreaterThan(0);
      // The current profiles take the write side only.
      expect(r.lock.sites.every((s) => s.side === 'write') && r.lock.sides.read.acquisitions === 0, scenario).toBe(true);
      const again = await runSim(o);
      expect([again.schedule?.hash, again.lock.sites.map((s) => [s.site, s.acquisitions, s.contentions])], `${scenario}: ${r.replay}`).toEqual([
        r.schedule?.hash,
        r.lock.sites.map((s) => [s.site, s.acquisitions, s.contentions]),
      ]);
    }
  });
});
