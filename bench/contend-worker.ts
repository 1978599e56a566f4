/**
 * Worker side of the contended-lock benchmark (bench/contend.ts): rounds of
 * "lock, critical section, unlock, work outside" as fast as possible, with
 * statistics on or off as the round says. Coordinated through words of the
 * shared buffer (a barrier per round), never with sleeps.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { SpinLock } from '../src/sync/spinlock.js';
import { createLock } from '../src/sync/locks.js';
import { LockStats } from '../src/sync/lockstat.js';
import { Actor } from '../src/sync/actor.js';
import { FreeSched } from '../src/sync/sched.js';
import { LS } from '../src/sync/locksites.js';
import { CW, contendReaders, type ContendWorkerData } from './contend-layout.js';

function waitChange(m: Int32Array, index: number, value: number): number {
  for (;;) {
    const v = Atomics.load(m, index);
    if (v !== value) return v;
    Atomics.wait(m, index, value, 100);
  }
}

/** Plain work on shared words, `n` steps (a critical section touching table-like memory, or work outside). */
function work(m: Int32Array, at: number, n: number): void {
  for (let i = 0; i < n; i++) m[at + (i & 63)] += i;
}

function main(d: ContendWorkerData): void {
  const m = new Int32Array(d.sab);
  const actor = new Actor(d.id, new FreeSched(m));
  const mine = CW.PER_WORKER + d.id * CW.WORKER_WORDS;
  let gen = 0;
  for (;;) {
    gen = waitChange(m, CW.GEN, gen);
    if (Atomics.load(m, CW.QUIT) !== 0) return;
    const statsOn = Atomics.load(m, CW.STATS) !== 0;
    const stats = statsOn ? new LockStats(d.holdSample, 977 + d.id + gen * 16) : null;
    const lock: SpinLock = createLock(d.kind, m, CW.LOCK, stats, { base: contendReaders(d.workers), n: d.workers });
    Atomics.add(m, CW.READY, 1);
    Atomics.notify(m, CW.READY);
    while (Atomics.load(m, CW.GO) !== gen) Atomics.wait(m, CW.GO, Atomics.load(m, CW.GO), 100);
    let n = 0;
    while (Atomics.load(m, CW.STOP) !== gen) {
      for (let k = 0; k < 16; k++) {
        lock.lock(actor, LS.fault);
        work(m, CW.DATA, d.holdWork);
        lock.unlock(actor);
        work(m, mine + 8, d.outsideWork);
      }
      n += 16;
    }
    let acq = n;
    let cont = 0;
    let holdNs = 0;
    if (stats) {
      const s = stats.snapshot().sites[LS.fault];
      acq = s.acq;
      cont = s.cont;
      holdNs = s.holdTimed > 0 ? s.holdTotal / s.acq : 0;
    }
    m[mine] = n;
    m[mine + 1] = acq;
    m[mine + 2] = cont;
    m[mine + 3] = Math.round(holdNs);
    Atomics.add(m, CW.DONE, 1);
    Atomics.notify(m, CW.DONE);
  }
}

main(workerData as ContendWorkerData);
parentPort?.postMessage('quit');
