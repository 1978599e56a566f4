/**
 * The scheduling-point hook. Protocol code calls `sched.point(site)` at every
 * shared-memory step another thread could interleave with, and
 * `sched.waitWhile(index, value, site)` wherever it must wait for another
 * actor (a held lock, a grace period, a TLB flush, a page under migration).
 *
 * - threads mode: `point` is a no-op, or with chaos a seeded random delay at a
 *   fraction of points (as KCSAN's delays widen race windows);
 * - sim mode (see src/sim): the same two calls hand control to a seeded
 *   strategy that runs exactly one actor at a time.
 *
 * Waiting is always "while this word still holds this value", so a blocked
 * actor can be described (and, in sim mode, judged runnable) by a pair of
 * numbers, without closures crossing threads.
 */
export interface Sched {
  /** A point where another actor may run. */
  point(site: number): void;
  /** Block while `m[index] === value`. Returns once it differs (or may return spuriously: callers re-check). */
  waitWhile(index: number, value: number, site: number): void;
  /**
   * Let time pass (pacing an actor's rate, e.g. host operations per second).
   * Real time in threads mode; in sim mode only a scheduling point.
   */
  idle(ms: number): void;
}

/**
 * Spins before a waiter starts yielding the CPU (Atomics.wait with a short
 * timeout), when the vCPUs have a core each: ~10-20 us of Atomics.load
 * here, longer than a fault's hold of mmu_lock, so that a lock handed over
 * between running threads is taken at once, as a spinning kernel waiter
 * takes it. (With 128 spins, measured: two threads on two cores taking a
 * ticket lock in a loop went through the futex on nearly every hand-over,
 * 0.1M acquisitions/s against 2.4M.)
 */
export const SPINS_LONG = 4096;
/**
 * Spins when the vCPUs outnumber the cores: a waiter then mostly waits for
 * a thread that is not running, and spinning long only takes the core from
 * it (and, measured, starved whatever else ran on the machine: a 64-vCPU
 * run on 2 cores spinning 4096 times per wait kept the workers of another
 * run from stopping for 5 s).
 */
export const SPINS_SHORT = 128;

/** How long waiters spin in a run with `vcpus` vCPUs on `cores` cores. */
export function spinsFor(vcpus: number, cores: number): number {
  return vcpus <= cores ? SPINS_LONG : SPINS_SHORT;
}

/** First and largest timeout of one yield, ms: a back-off, not a wait for a notification. */
const YIELD_MS = 0.02;
const YIELD_MAX_MS = 1;

/**
 * Wait while m[index] === value, spinning first, then yielding the core in
 * short back-offs (on 2 cores with more threads than cores a pure spin would
 * burn the time slice of the thread it waits for). Also used by the other
 * schedulers for their real waits.
 */
export function spinWaitWhile(m: Int32Array, index: number, value: number, spins = SPINS_LONG): void {
  for (let i = 0; i < spins; i++) {
    if (Atomics.load(m, index) !== value) return;
  }
  let t = YIELD_MS;
  while (Atomics.load(m, index) === value) {
    Atomics.wait(m, index, value, t);
    if (t < YIELD_MAX_MS) t *= 2;
  }
}

/** spinWaitWhile, saying in the actor's WAITING_ON word (if any) what it waits on. */
function recordedWaitWhile(m: Int32Array, waitWord: number, index: number, value: number, spins: number): void {
  if (waitWord >= 0) Atomics.store(m, waitWord, index + 1);
  spinWaitWhile(m, index, value, spins);
  if (waitWord >= 0) Atomics.store(m, waitWord, 0);
}

const idleCell = new Int32Array(new SharedArrayBuffer(4));
/** Real-time pause of the calling thread (threads mode pacing only). */
export function idleFor(ms: number): void {
  if (ms > 0) Atomics.wait(idleCell, 0, 0, ms);
}

/**
 * threads mode without chaos. `waitWord`, when given, is the actor's
 * WAITING_ON word: index + 1 of what it waits for, so that the watchdog can
 * say who waits on what. `spins`: see spinsFor().
 */
export class FreeSched implements Sched {
  constructor(
    private readonly m: Int32Array,
    private readonly waitWord = -1,
    private readonly spins = SPINS_LONG,
  ) {}
  point(_site: number): void {}
  waitWhile(index: number, value: number, _site: number): void {
    recordedWaitWhile(this.m, this.waitWord, index, value, this.spins);
  }
  idle(ms: number): void {
    idleFor(ms);
  }
}

/** xorshift32: tiny, seedable, good enough for delays and workloads. */
export class XorShift32 {
  private s: number;
  constructor(seed: number) {
    this.s = seed | 0 || 0x9e3779b9;
  }
  nextU32(): number {
    let x = this.s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.s = x;
    return x >>> 0;
  }
  /** Uniform in [0, n). */
  below(n: number): number {
    return this.nextU32() % n;
  }
  /** Uniform in [0, 1). */
  float(): number {
    return this.nextU32() / 4294967296;
  }
}

/**
 * threads mode with --chaos P: at a fraction P of points, a seeded random
 * delay: mostly a short spin, sometimes giving up the core.
 */
export class ChaosSched implements Sched {
  private readonly rng: XorShift32;
  private readonly threshold: number;
  private readonly scratch = new Int32Array(new SharedArrayBuffer(4));
  constructor(
    private readonly m: Int32Array,
    probability: number,
    seed: number,
    private readonly waitWord = -1,
    private readonly spins = SPINS_LONG,
  ) {
    this.rng = new XorShift32(seed);
    this.threshold = Math.floor(probability * 4294967296);
  }
  point(_site: number): void {
    if (this.rng.nextU32() >= this.threshold) return;
    const r = this.rng.nextU32();
    if ((r & 7) === 0) {
      Atomics.wait(this.scratch, 0, 0, 0.02 + (r >>> 24) / 2560);
    } else {
      const n = (r >>> 8) & 1023;
      let x = 0;
      for (let i = 0; i < n; i++) x += i;
      if (x === -1) this.scratch[0] = 0;
    }
  }
  waitWhile(index: number, value: number, _site: number): void {
    recordedWaitWhile(this.m, this.waitWord, index, value, this.spins);
  }
  idle(ms: number): void {
    idleFor(ms);
  }
}
