/**
 * Worker-thread side of the lock tests (plain JS: it loads the compiled
 * code in dist/, so `npm run build` must have run). One job per worker,
 * chosen by workerData.job; threads are coordinated with Atomics on the
 * shared buffer (barriers, go flags), never with sleeps.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { TicketLock, TasLock } from '../../dist/src/sync/spinlock.js';
import { LockStats } from '../../dist/src/sync/lockstat.js';
import { Actor } from '../../dist/src/sync/actor.js';
import { FreeSched } from '../../dist/src/sync/sched.js';

/** Shared words of the tests (after the lock block at 0..7). */
export const W = { BARRIER: 8, INSIDE: 9, OVERLAPS: 10, COUNTER: 11, LOG_LEN: 12, GO: 16, LOG: 64 };

function makeLock(kind, m, stats) {
  return kind === 'tas' ? new TasLock(m, 0, stats) : new TicketLock(m, 0, stats);
}

/** Every worker arrives, then all leave together. */
function barrier(m, n) {
  Atomics.add(m, W.BARRIER, 1);
  Atomics.notify(m, W.BARRIER);
  for (;;) {
    const v = Atomics.load(m, W.BARRIER);
    if (v >= n) return;
    Atomics.wait(m, W.BARRIER, v);
  }
}

/** Mutual exclusion: a non-atomic read-modify-write and an occupancy count inside the critical section. */
function mutex({ sab, kind, id, iters, workers, stats, holdSample }) {
  const m = new Int32Array(sab);
  const st = stats ? new LockStats(holdSample, 1000 + id) : null;
  const lock = makeLock(kind, m, st);
  const actor = new Actor(id, new FreeSched(m));
  barrier(m, workers);
  for (let i = 0; i < iters; i++) {
    lock.lock(actor, id % 3);
    if (Atomics.add(m, W.INSIDE, 1) !== 0) Atomics.add(m, W.OVERLAPS, 1);
    const v = m[W.COUNTER];
    let spin = 0;
    for (let k = 0; k < (i & 15); k++) spin += k; // widen the window a little
    m[W.COUNTER] = v + 1 + (spin < 0 ? 1 : 0);
    if (!lock.heldBy(actor) || lock.owner() !== id) Atomics.add(m, W.OVERLAPS, 1);
    Atomics.sub(m, W.INSIDE, 1);
    lock.unlock(actor);
  }
  return st ? st.snapshot() : null;
}

/** FIFO: wait for the go flag, take a ticket (blocks: the main thread holds the lock), log the order of service. */
function fifo({ sab, id }) {
  const m = new Int32Array(sab);
  const lock = makeLock('ticket', m, null);
  const actor = new Actor(id, new FreeSched(m));
  while (Atomics.load(m, W.GO + id) === 0) Atomics.wait(m, W.GO + id, 0);
  lock.lock(actor, 0);
  const at = Atomics.add(m, W.LOG_LEN, 1);
  Atomics.store(m, W.LOG + at, id);
  lock.unlock(actor);
  return null;
}

/** Statistics of known values, to be merged on the main thread. */
function record({ id, values }) {
  const st = new LockStats(1, 7 + id);
  for (const [site, waitNs, holdNs] of values) {
    st.acquired(site, waitNs >= 0, false);
    st.timed(site, waitNs, holdNs, 1);
  }
  return st.snapshot();
}

const jobs = { mutex, fifo, record };
parentPort.postMessage(jobs[workerData.job](workerData));
