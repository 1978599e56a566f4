/**
 * The cost of lock statistics under contention, isolated: as many worker
 * threads as cores take the lock in a loop, each time doing a fixed amount
 * of plain work on shared words inside the critical section (about a fault's
 * hold) and the same amount outside. Rounds alternate statistics on and off
 * (same threads, same work); the result is the median over pairs of
 * (acquisitions/s with statistics) / (acquisitions/s without).
 *
 * Every cycle here is lock-bound, so this bounds from above what statistics
 * cost a real run, where the lock is only part of the work. The s2stress
 * run pairs (scaling.ts overheadBench) measure that directly, but their
 * run-to-run spread on a shared 2-core machine is larger than the effect.
 */
import { Worker } from 'node:worker_threads';
import type { LockKind } from '../src/config.js';
import { DEFAULT_HOLD_SAMPLE } from '../src/sync/lockstat.js';
import { CW, contendWords, type ContendWorkerData } from './contend-layout.js';
import { median } from './micro.js';
import { distFile } from './workers.js';

export interface ContendOptions {
  kind: LockKind;
  threads: number;
  roundMs: number;
  pairs: number;
  holdWork: number;
  outsideWork: number;
}

export interface ContendRound {
  statistics: boolean;
  acqPerSec: number;
  /** From the statistics (rounds with statistics only). */
  contentionRatio: number | null;
  holdAvgNs: number | null;
  /** Acquisitions of each thread (a starved thread shows here). */
  perThread: number[];
}

export interface ContendResult extends ContendOptions {
  rounds: ContendRound[];
  /** Median over pairs of on/off acquisitions per second. */
  ratio: number;
  contentionRatio: number;
  holdAvgNs: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitCount(m: Int32Array, index: number, n: number): Promise<void> {
  for (;;) {
    const v = Atomics.load(m, index);
    if (v >= n) return;
    const w = Atomics.waitAsync(m, index, v, 1000);
    if (w.async) await w.value;
  }
}

export async function contendedBench(o: ContendOptions): Promise<ContendResult> {
  const sab = new SharedArrayBuffer(contendWords(o.threads) * 4);
  const m = new Int32Array(sab);
  const file = distFile('contend-worker.js');
  const workers = Array.from({ length: o.threads }, (_, id) => {
    const data: ContendWorkerData = { sab, id, kind: o.kind, workers: o.threads, holdSample: DEFAULT_HOLD_SAMPLE, holdWork: o.holdWork, outsideWork: o.outsideWork };
    return new Worker(file, { workerData: data });
  });
  const exited = workers.map((w) => new Promise<void>((resolve, reject) => {
    w.once('error', reject);
    w.once('exit', () => resolve());
  }));
  let gen = 0;
  const round = async (statistics: boolean): Promise<ContendRound> => {
    gen++;
    for (let i = CW.LOCK; i < CW.LOCK + 8; i++) m[i] = 0;
    Atomics.store(m, CW.READY, 0);
    Atomics.store(m, CW.DONE, 0);
    Atomics.store(m, CW.STATS, statistics ? 1 : 0);
    Atomics.store(m, CW.GEN, gen);
    Atomics.notify(m, CW.GEN);
    await waitCount(m, CW.READY, o.threads);
    const t0 = performance.now();
    Atomics.store(m, CW.GO, gen);
    Atomics.notify(m, CW.GO);
    await sleep(o.roundMs);
    Atomics.store(m, CW.STOP, gen);
    const t1 = performance.now();
    await waitCount(m, CW.DONE, o.threads);
    let n = 0;
    let acq = 0;
    let cont = 0;
    let hold = 0;
    const perThread: number[] = [];
    for (let id = 0; id < o.threads; id++) {
      const at = CW.PER_WORKER + id * CW.WORKER_WORDS;
      perThread.push(m[at]);
      n += m[at];
      acq += m[at + 1];
      cont += m[at + 2];
      hold += m[at + 3] * m[at + 1];
    }
    return {
      statistics,
      acqPerSec: n / ((t1 - t0) / 1000),
      contentionRatio: statistics ? cont / acq : null,
      holdAvgNs: statistics ? hold / acq : null,
      perThread,
    };
  };
  try {
    await round(true); // warm-up, both ways
    await round(false);
    const rounds: ContendRound[] = [];
    const ratios: number[] = [];
    for (let i = 0; i < o.pairs; i++) {
      const order = i % 2 === 0 ? [true, false] : [false, true];
      const got = [];
      for (const st of order) got.push(await round(st));
      rounds.push(...got);
      const on = got.find((r) => r.statistics)!;
      const off = got.find((r) => !r.statistics)!;
      ratios.push(on.acqPerSec / off.acqPerSec);
    }
    const on = rounds.filter((r) => r.statistics);
    return {
      ...o,
      rounds,
      ratio: median(ratios),
      contentionRatio: median(on.map((r) => r.contentionRatio ?? 0)),
      holdAvgNs: median(on.map((r) => r.holdAvgNs ?? 0)),
    };
  } finally {
    Atomics.store(m, CW.QUIT, 1);
    Atomics.add(m, CW.GEN, 1);
    Atomics.notify(m, CW.GEN);
    await Promise.all(exited);
  }
}
