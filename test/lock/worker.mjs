/**
 * Worker-thread side of the lock tests (plain JS: it loads the compiled
 * code in dist/, so `npm run build` must have run). One job per worker,
 * chosen by workerData.job; threads are coordinated with Atomics on the
 * shared buffer (barriers, go flags), never with sleeps.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { createLock } from '../../dist/src/sync/locks.js';
import { QW_WAITING } from '../../dist/src/sync/rwlock.js';
import { LockStats } from '../../dist/src/sync/lockstat.js';
import { Actor } from '../../dist/src/sync/actor.js';
import { FreeSched } from '../../dist/src/sync/sched.js';
import { SimSched, SimState } from '../../dist/src/sim/sched.js';
import { SITE } from '../../dist/src/sync/sites.js';

/** Shared words of the tests (after the lock block at 0..7): as W in support.ts. */
export const W = {
  BARRIER: 8, INSIDE: 9, OVERLAPS: 10, COUNTER: 11, LOG_LEN: 12, GO: 16,
  R_IN: 32, W_IN: 33, DATA_A: 35, DATA_B: 36, TORN: 37, BARRIER2: 38, BARRIER3: 39, WLOG: 40,
  LOG: 64, READERS: 192,
};
export const READERS_N = 64;
/** Words of the sim-mode jobs: the first 64 are the scheduler's control words (CTRL), as in a run. As SIMW in support.ts. */
export const SIMW = { LOCK: 64, READERS: 72, HANG: 96, FLAG: 97, R_IN: 98, W_IN: 99, DATA_A: 101, DATA_B: 102, TORN: 103, COUNTER: 104, OVERLAPS: 105 };
export const SIM_READERS_N = 16;

function makeLock(kind, m, stats) {
  return createLock(kind, m, 0, stats, { base: W.READERS, n: READERS_N });
}

/** Every worker arrives, then all leave together. */
function barrier(m, n, at = W.BARRIER) {
  Atomics.add(m, at, 1);
  Atomics.notify(m, at);
  for (;;) {
    const v = Atomics.load(m, at);
    if (v >= n) return;
    Atomics.wait(m, at, v);
  }
}

/** A barrier that gives up after `ms` (false): for a wait a broken lock could make endless. */
function barrierWithin(m, n, at, ms) {
  Atomics.add(m, at, 1);
  Atomics.notify(m, at);
  const limit = Date.now() + ms;
  for (;;) {
    const v = Atomics.load(m, at);
    if (v >= n) return true;
    if (Date.now() > limit) return false;
    Atomics.wait(m, at, v, 50);
  }
}

/** A few steps of work, to widen a window (no sleep). */
function spin(n) {
  let x = 0;
  for (let k = 0; k < n; k++) x += k;
  return x;
}

/**
 * Readers and writers of an rwlock under real threads. Phase 1, readers
 * only: every reader takes the read side and waits at a barrier inside it
 * for the others (readers overlap; a lock that serialized them would time
 * the barrier out). Phase 2, everybody, `iters` times: writers write DATA_A
 * and DATA_B (a non-atomic pair) and COUNTER under the write side; readers
 * read the pair under the read side. Overlaps (a writer with anybody else
 * inside) and torn reads are counted.
 */
function rw({ sab, id, role, iters, readers, workers }) {
  const m = new Int32Array(sab);
  const lock = makeLock('rwlock', m, null);
  const actor = new Actor(id, new FreeSched(m));
  let phase1Max = 0;
  let phase1Met = true;
  if (role === 'reader') {
    lock.readLock(actor, id % 3);
    Atomics.add(m, W.R_IN, 1);
    phase1Met = barrierWithin(m, readers, W.BARRIER2, 5000);
    phase1Max = Atomics.load(m, W.R_IN);
    if (lock.readers() !== phase1Max && phase1Met) Atomics.add(m, W.OVERLAPS, 1);
    // and nobody leaves before all have looked (the same barrier word, counting on)
    if (phase1Met) barrierWithin(m, 2 * readers, W.BARRIER2, 5000);
    Atomics.sub(m, W.R_IN, 1);
    lock.readUnlock(actor);
  }
  barrier(m, workers, W.BARRIER3);
  let max = 0;
  for (let i = 0; i < iters; i++) {
    if (role === 'reader') {
      lock.readLock(actor, id % 3);
      const n = Atomics.add(m, W.R_IN, 1) + 1;
      if (n > max) max = n;
      if (Atomics.load(m, W.W_IN) !== 0 || lock.owner() !== -1) Atomics.add(m, W.OVERLAPS, 1);
      const a = m[W.DATA_A];
      spin(i & 31);
      const b = m[W.DATA_B];
      if (a !== b) Atomics.add(m, W.TORN, 1);
      if (!lock.readHeldBy(actor)) Atomics.add(m, W.OVERLAPS, 1);
      Atomics.sub(m, W.R_IN, 1);
      lock.readUnlock(actor);
    } else {
      lock.lock(actor, 3);
      if (Atomics.add(m, W.W_IN, 1) !== 0) Atomics.add(m, W.OVERLAPS, 1);
      if (Atomics.load(m, W.R_IN) !== 0 || lock.readers() !== 0) Atomics.add(m, W.OVERLAPS, 1);
      const v = m[W.COUNTER] + 1;
      m[W.DATA_A] = v;
      spin(i & 31);
      m[W.DATA_B] = v;
      m[W.COUNTER] = v;
      if (!lock.heldBy(actor) || lock.owner() !== id) Atomics.add(m, W.OVERLAPS, 1);
      Atomics.sub(m, W.W_IN, 1);
      lock.unlock(actor);
    }
  }
  return { phase1Max, phase1Met, max };
}

/**
 * Fairness, one actor per worker: wait for the go flag, then take the
 * write side (`writer`) or the read side; log the order of service, and
 * what a writer saw inside (WLOG: readers then).
 */
function rwOrder({ sab, id, role }) {
  const m = new Int32Array(sab);
  const lock = makeLock('rwlock', m, null);
  const actor = new Actor(id, new FreeSched(m));
  while (Atomics.load(m, W.GO + id) === 0) Atomics.wait(m, W.GO + id, 0);
  if (role === 'writer') lock.lock(actor, 0);
  else lock.readLock(actor, 0);
  const at = Atomics.add(m, W.LOG_LEN, 1);
  Atomics.store(m, W.LOG + at, id);
  if (role === 'writer') {
    Atomics.store(m, W.WLOG, lock.readers() + 1);
    lock.unlock(actor);
  } else {
    lock.readUnlock(actor);
  }
  return null;
}

/**
 * An actor of a sim-mode test (src/sim/sched.ts: one actor runs at a time,
 * a waiter is blocked while its word is unchanged). `loop`: `iters` read or
 * write sections as in rw(), with scheduling points of high preemption
 * odds inside them; `steps`: a script of lock operations and flags
 * (['read'], ['write'], ['readUnlock'], ['unlock'], ['set', word],
 * ['waitSet', word], ['waitWriterWaiting'], ['hang']).
 */
function simActor({ sab, simSab, simCfg, id, role, iters, steps }) {
  const m = new Int32Array(sab);
  const sched = new SimSched(m, new SimState(simSab, simCfg), id);
  const lock = createLock('rwlock', m, SIMW.LOCK, null, { base: SIMW.READERS, n: SIM_READERS_N });
  const actor = new Actor(id, sched);
  const inside = SITE['memslot.publish']; // preempted one time in two
  sched.start();
  let max = 0;
  if (role === 'reader' || role === 'writer') {
    for (let i = 0; i < iters; i++) {
      if (role === 'reader') {
        lock.readLock(actor, 0);
        const n = Atomics.add(m, SIMW.R_IN, 1) + 1;
        if (n > max) max = n;
        if (Atomics.load(m, SIMW.W_IN) !== 0) Atomics.add(m, SIMW.OVERLAPS, 1);
        const a = m[SIMW.DATA_A];
        sched.point(inside);
        const b = m[SIMW.DATA_B];
        if (a !== b) Atomics.add(m, SIMW.TORN, 1);
        sched.point(inside);
        Atomics.sub(m, SIMW.R_IN, 1);
        lock.readUnlock(actor);
      } else {
        lock.lock(actor, 1);
        if (Atomics.add(m, SIMW.W_IN, 1) !== 0 || Atomics.load(m, SIMW.R_IN) !== 0) Atomics.add(m, SIMW.OVERLAPS, 1);
        const v = m[SIMW.COUNTER] + 1;
        m[SIMW.DATA_A] = v;
        sched.point(inside);
        m[SIMW.DATA_B] = v;
        m[SIMW.COUNTER] = v;
        Atomics.sub(m, SIMW.W_IN, 1);
        lock.unlock(actor);
      }
      sched.point(SITE['actor.loop']);
    }
  } else {
    for (const [op, word] of steps) {
      if (op === 'read') lock.readLock(actor, 0);
      else if (op === 'write') lock.lock(actor, 1);
      else if (op === 'readUnlock') lock.readUnlock(actor);
      else if (op === 'unlock') lock.unlock(actor);
      else if (op === 'set') Atomics.store(m, word, 1);
      else if (op === 'waitSet') while (Atomics.load(m, word) === 0) sched.waitWhile(word, 0, SITE.park);
      else if (op === 'waitWriterWaiting') {
        for (;;) {
          const c = Atomics.load(m, SIMW.LOCK);
          if ((c & QW_WAITING) !== 0) break;
          sched.waitWhile(SIMW.LOCK, c, SITE.park);
        }
      } else if (op === 'hang') for (;;) sched.waitWhile(SIMW.HANG, 0, SITE.park);
      else throw new Error(`unknown step ${op}`);
    }
  }
  sched.exit();
  return { id, max };
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

const jobs = { mutex, fifo, record, rw, rwOrder, simActor };
parentPort.postMessage(jobs[workerData.job](workerData));
