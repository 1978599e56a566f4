/**
 * Deterministic mode: exactly one actor runs at a time. Every actor is still
 * its own worker thread running the same protocol code; what differs is this
 * Sched: at each scheduling point the running actor itself asks a seeded
 * strategy who runs next, and hands over the baton (one futex wake) only when
 * that is somebody else. The whole scheduler state lives in a small shared
 * region written only by the running actor, so every decision depends on the
 * seed and the program alone: same seed and configuration, same run.
 *
 * Strategies (Shuttle's vocabulary):
 * - `random`: at each point, with the site's odds (SITE_PREEMPT_EVERY in
 *   src/sync/sites.ts: 1 in 256 by default, 1 in 2 to 1 in 64 at the sites
 *   that open race windows), the running actor is preempted for one drawn
 *   uniformly among the other runnable ones (a preemption at every point
 *   would cost a thread hand-over at every point). At a lock release, with
 *   probability 1/HANDOFF_EVERY, the lock goes to a waiter: the baton passes
 *   to an actor that was blocked and can now run (a ticket lock serves its
 *   next waiter at once; without this a waiter would run only when a
 *   preemption happened to fall there);
 * - `pct`: Burckhardt et al., ASPLOS 2010: distinct random priorities, the
 *   highest-priority runnable actor runs, and at d-1 random change points the
 *   running actor drops below every initial priority. A change point is
 *   drawn as a step number and falls on the first window site
 *   (WINDOW_SITES) at or after it.
 *
 * The meaning of a seed is versioned (SCHEDULE_VERSION): a change to the
 * strategies, the site odds or the seeded workloads makes the same seed a
 * different run, and a report of another version cannot be replayed.
 *
 * Blocking: `waitWhile(index, value)` marks the actor blocked on that word; it
 * is runnable again once the word differs. When no actor is runnable the
 * baton goes to the orchestrator (the main thread), which either runs the
 * stop-the-world checks (every actor parked) or reports a deadlock.
 */
import type { Sched } from '../sync/sched.js';
import { CTRL } from '../shm/layout.js';
import { SITE, SITE_NAMES, SITE_PREEMPT_EVERY, WINDOW_SITES } from '../sync/sites.js';

export const SIM = {
  CURRENT: 0,
  HASH: 1,
  RNG: 2,
  READY: 3,
  /** Index of the next PCT change point. */
  CHANGE_IDX: 4,
  /** Set by an actor that found nobody runnable and the world not parked. */
  DEADLOCK: 5,
  /** Actor that found the deadlock (+1). */
  DEADLOCK_BY: 6,
  /** Last progress sum seen by the livelock watch, and steps since it moved. */
  LAST_PROGRESS: 7,
  /** 1 = request a stop-the-world at NEXT_CHECK steps. */
  CHECKS_ON: 8,
  LIVELOCK: 9,
  /** Set by the orchestrator (a signal): the run ends at the next end-of-run check, whose step is recorded. */
  STOP_REQ: 10,
  WORDS: 16,
} as const;

/** Float64 slots (after the Int32 header). */
export const SIMF = {
  STEPS: 0,
  SWITCHES: 1,
  NEXT_CHECK: 2,
  CHECK_EVERY: 3,
  PROGRESS_AT: 4,
  /** Replay of an interrupted run: end at the first end-of-run check at or after this step (Infinity: never). */
  STOP_AT: 5,
  /** The step at which a stop request or STOP_AT ended the run (-1: it did not). */
  STOPPED_AT: 6,
  /** Preemptive switches so far: the running actor could have gone on (not hashed: counting changes no schedule). */
  PREEMPTIONS: 7,
  WORDS: 8,
} as const;

export const STATE_RUNNABLE = 0;
export const STATE_BLOCKED = 1;
export const STATE_DONE = 2;

/** Per-actor words: state, wait index, wait value, priority, turn. */
const PER_ACTOR = 5;
const A_STATE = 0;
const A_WAIT_IDX = 1;
const A_WAIT_VAL = 2;
const A_PRIO = 3;
const A_TURN = 4;

/**
 * Version of what a sim seed means: the strategies, the site odds and the
 * seeded choices of the actors. Reports carry it (`schedule.version`);
 * `replay` refuses a report of another version. 1: uniform 1/256
 * preemption (no version field in the report); 2: per-site odds, lock
 * hand-over to waiters, PCT change points on window sites, host operations
 * aimed at hot pages, edge accesses; 3: the host model's KSM merge holds the
 * lock of the page it makes stable and a reference on both pages, looked up
 * under their host PTE locks (two more scheduling points per merge): a seed
 * whose run meets a KSM merge runs differently.
 */
export const SCHEDULE_VERSION = 3;

/** At a lock release, the lock goes to a waiter with probability 1/HANDOFF_EVERY (random strategy). */
export const HANDOFF_EVERY = 2;
/** Steps without any actor's progress before the run is called a livelock. */
export const LIVELOCK_STEPS = 1 << 24;
const SLOW_PATH_EVERY = 1024;
const P_RELEASE = SITE['lock.release'];

export type SimStrategy = 'random' | 'pct';

export interface SimConfig {
  strategy: SimStrategy;
  seed: number;
  actors: number;
  pctDepth: number;
  /** Estimated steps of the run (PCT change points are drawn in [1, estimate]). */
  estimatedSteps: number;
  /** Stop-the-world checks every this many steps (0 = none). */
  checkEverySteps: number;
  /** How many actors count as vCPUs (ids 0..vcpus-1) for the end condition. */
  vcpus: number;
  /** End the run at the first end-of-run check at or after this step, as an interrupted run did (replay). */
  stopAtStep?: number | null;
  /**
   * Preemption bound (CHESS, Musuvathi and Qadeer, PLDI 2007): after this
   * many preemptive switches the strategy only switches when the running
   * actor blocks, yields (idle) or ends. Null or absent: unbounded, and the
   * schedule of every seed exactly as without the bound.
   */
  maxPreemptions?: number | null;
}

export class SimState {
  readonly s: Int32Array;
  readonly f: Float64Array;
  readonly changePoints: Float64Array;
  readonly actorsBase: number;
  readonly main: number;
  constructor(
    readonly sab: SharedArrayBuffer,
    readonly cfg: SimConfig,
  ) {
    const n = cfg.actors + 1;
    const intWords = SIM.WORDS + n * PER_ACTOR;
    const intBytes = Math.ceil((intWords * 4) / 8) * 8;
    this.s = new Int32Array(sab, 0, intWords);
    this.f = new Float64Array(sab, intBytes, SIMF.WORDS + 16);
    this.changePoints = new Float64Array(sab, intBytes + (SIMF.WORDS + 16) * 8, 16);
    this.actorsBase = SIM.WORDS;
    this.main = cfg.actors;
  }

  static bytes(cfg: SimConfig): number {
    const n = cfg.actors + 1;
    const intWords = SIM.WORDS + n * PER_ACTOR;
    return Math.ceil((intWords * 4) / 8) * 8 + (SIMF.WORDS + 16 + 16) * 8;
  }

  /** Lay out the initial state: priorities and change points drawn from the seed. */
  static create(cfg: SimConfig): SimState {
    const st = new SimState(new SharedArrayBuffer(SimState.bytes(cfg)), cfg);
    const s = st.s;
    s[SIM.RNG] = cfg.seed | 0 || 0x6d2b79f5;
    s[SIM.HASH] = 0x811c9dc5 | 0;
    s[SIM.CURRENT] = -1;
    st.f[SIMF.CHECK_EVERY] = cfg.checkEverySteps;
    st.f[SIMF.NEXT_CHECK] = cfg.checkEverySteps > 0 ? cfg.checkEverySteps : Infinity;
    s[SIM.CHECKS_ON] = cfg.checkEverySteps > 0 ? 1 : 0;
    st.f[SIMF.STOP_AT] = cfg.stopAtStep ?? Infinity;
    st.f[SIMF.STOPPED_AT] = -1;
    // PCT: a random permutation of priorities d .. d+n-1 (higher runs first).
    const n = cfg.actors;
    const prios = Array.from({ length: n }, (_, i) => cfg.pctDepth + i);
    for (let i = n - 1; i > 0; i--) {
      const j = st.rand() % (i + 1);
      [prios[i], prios[j]] = [prios[j], prios[i]];
    }
    for (let a = 0; a < n; a++) s[st.word(a, A_PRIO)] = prios[a];
    const k = Math.max(1, cfg.estimatedSteps);
    const cps: number[] = [];
    for (let i = 0; i < Math.min(15, cfg.pctDepth - 1); i++) cps.push(1 + (st.rand() % k));
    cps.sort((a, b) => a - b);
    st.changePoints.fill(Infinity);
    cps.forEach((c, i) => (st.changePoints[i] = c));
    return st;
  }

  word(actor: number, w: number): number {
    return this.actorsBase + actor * PER_ACTOR + w;
  }

  /** xorshift32 over the shared RNG word (only the running actor calls it). */
  rand(): number {
    let x = this.s[SIM.RNG];
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.s[SIM.RNG] = x;
    return x >>> 0;
  }

  /** Pass the baton from `from` to `next` (one futex wake); the choice is part of the schedule hash. */
  handOver(from: number, next: number): void {
    const s = this.s;
    this.f[SIMF.SWITCHES] += 1;
    s[SIM.CURRENT] = next;
    s[SIM.HASH] = Math.imul(s[SIM.HASH] ^ (next + 0x10000), 16777619);
    Atomics.store(s, this.word(from, A_TURN), 0);
    const t = this.word(next, A_TURN);
    Atomics.store(s, t, 1);
    Atomics.notify(s, t);
  }

  hashString(): string {
    const steps = this.f[SIMF.STEPS];
    return `${(this.s[SIM.HASH] >>> 0).toString(16).padStart(8, '0')}-${steps.toString(16)}`;
  }
}

/**
 * The per-actor Sched of sim mode. `m` is the model's memory (blocking words
 * live there), `state` the scheduler's.
 */
export class SimSched implements Sched {
  private readonly s: Int32Array;
  private readonly f: Float64Array;
  private readonly n: number;
  private readonly pct: boolean;
  /** Per site: preempt when rand() < threshold (2^32 / SITE_PREEMPT_EVERY). */
  private readonly thresholds: Float64Array;
  /** The preemption bound (Infinity: none). */
  private readonly maxPreemptions: number;
  /** Set while idle() yields: that switch is not a preemption and is never suppressed. */
  private yielding = false;
  /**
   * `progressBase` is the word of actor 0's PROGRESS counter and
   * `progressStride` the distance between actors' (the livelock watch);
   * `waitWord` this actor's WAITING_ON word (-1 for none).
   */
  constructor(
    private readonly m: Int32Array,
    private readonly st: SimState,
    readonly me: number,
    private readonly waitWord = -1,
    private readonly progressBase = -1,
    private readonly progressStride = 0,
  ) {
    this.s = st.s;
    this.f = st.f;
    this.n = st.cfg.actors;
    this.pct = st.cfg.strategy === 'pct';
    this.maxPreemptions = st.cfg.maxPreemptions ?? Infinity;
    this.thresholds = new Float64Array(SITE_NAMES.length);
    for (let i = 0; i < SITE_NAMES.length; i++) this.thresholds[i] = Math.floor(4294967296 / SITE_PREEMPT_EVERY[i]);
  }

  /** Called by the worker before the actor's first step: wait for the baton. */
  start(): void {
    Atomics.add(this.s, SIM.READY, 1);
    Atomics.notify(this.s, SIM.READY);
    this.waitTurn();
  }

  /** Called when the actor's task returns: hand the baton on for good. */
  exit(): void {
    this.s[this.st.word(this.me, A_STATE)] = STATE_DONE;
    const next = this.choose(-1);
    this.handTo(next);
  }

  point(site: number): void {
    const f = this.f;
    const s = this.s;
    const steps = f[SIMF.STEPS] + 1;
    f[SIMF.STEPS] = steps;
    s[SIM.HASH] = Math.imul(s[SIM.HASH] ^ ((this.me << 8) | site), 16777619);
    // steps % SLOW_PATH_EVERY without a floating-point remainder (steps
    // passes 2^31 in long runs): ToInt32 keeps steps mod 2^32, a multiple
    // of SLOW_PATH_EVERY, so the low bits are the same.
    if ((steps & (SLOW_PATH_EVERY - 1)) === 0) this.slowPath(steps);
    // The bound is spent: no draw, no switch, the running actor goes on (a
    // yield still switches). Unbounded runs never take this branch.
    if (!this.yielding && f[SIMF.PREEMPTIONS] >= this.maxPreemptions) return;
    let next: number;
    if (this.pct) {
      if (steps >= this.st.changePoints[s[SIM.CHANGE_IDX]] && WINDOW_SITES[site]) {
        // change point i (1-based): the running actor drops to priority d - i
        const i = s[SIM.CHANGE_IDX] + 1;
        s[SIM.CHANGE_IDX] = i;
        s[this.st.word(this.me, A_PRIO)] = this.st.cfg.pctDepth - i;
      }
      next = this.pickPct(this.me);
    } else {
      if (site === P_RELEASE && this.st.rand() % HANDOFF_EVERY === 0) {
        next = this.pickWoken();
        if (next >= 0) {
          this.preempt(next);
          return;
        }
      }
      if (this.st.rand() >= this.thresholds[site]) return;
      next = this.pickRandom(this.me, true);
      if (next === this.st.main) return;
    }
    if (next !== this.me) this.preempt(next);
  }

  /** A switch away from an actor that could go on: counted, unless it is idle()'s yield. */
  private preempt(next: number): void {
    if (!this.yielding) this.f[SIMF.PREEMPTIONS] += 1;
    this.switchTo(next);
  }

  /**
   * An actor other than this one that was blocked and can run now (what it
   * waited for changed: a lock just released), drawn uniformly; -1 if none.
   */
  private pickWoken(): number {
    const s = this.s;
    let count = 0;
    for (let a = 0; a < this.n; a++) {
      if (a !== this.me && s[this.st.word(a, A_STATE)] === STATE_BLOCKED && this.runnable(a)) count++;
    }
    if (count === 0) return -1;
    let k = this.st.rand() % count;
    for (let a = 0; a < this.n; a++) {
      if (a !== this.me && s[this.st.word(a, A_STATE)] === STATE_BLOCKED && this.runnable(a)) {
        if (k === 0) return a;
        k--;
      }
    }
    return -1;
  }

  waitWhile(index: number, value: number, site: number): void {
    if (Atomics.load(this.m, index) !== value) {
      this.point(site);
      return;
    }
    const s = this.s;
    const stw = this.st.word(this.me, 0);
    s[stw + A_STATE] = STATE_BLOCKED;
    s[stw + A_WAIT_IDX] = index;
    s[stw + A_WAIT_VAL] = value;
    if (this.waitWord >= 0) Atomics.store(this.m, this.waitWord, index + 1);
    this.f[SIMF.STEPS] += 1;
    s[SIM.HASH] = Math.imul(s[SIM.HASH] ^ ((this.me << 8) | site | 0x80000000), 16777619);
    const next = this.choose(-1);
    this.switchTo(next);
    s[stw + A_STATE] = STATE_RUNNABLE;
    if (this.waitWord >= 0) Atomics.store(this.m, this.waitWord, 0);
  }

  /**
   * Pacing (`idle`) is a yield in sim mode. Under PCT the yielding actor drops
   * below every other priority, as yield_now() does in PCT implementations:
   * without it an endless actor (the host MM, the migrator) of high priority
   * would starve the vCPUs and the run would never end.
   */
  idle(_ms: number): void {
    if (this.pct) {
      const s = this.s;
      let min = Infinity;
      for (let a = 0; a < this.n; a++) min = Math.min(min, s[this.st.word(a, A_PRIO)]);
      s[this.st.word(this.me, A_PRIO)] = min - 1;
    }
    this.yielding = true;
    try {
      this.point(SITE.park);
    } finally {
      this.yielding = false;
    }
  }

  private runnable(a: number): boolean {
    const s = this.s;
    const w = this.st.word(a, 0);
    const state = s[w + A_STATE];
    if (state === STATE_RUNNABLE) return true;
    if (state === STATE_DONE) return false;
    return Atomics.load(this.m, s[w + A_WAIT_IDX]) !== s[w + A_WAIT_VAL];
  }

  /** Who runs next; `current` is the running actor if it may continue, else -1. Main when nobody can. */
  choose(current: number): number {
    return this.pct ? this.pickPct(current) : this.pickRandom(current);
  }

  /**
   * A uniformly drawn runnable actor (`current`, the running one, counts as
   * runnable); with `others`, one other than `current`. Main when none.
   */
  private pickRandom(current: number, others = false): number {
    let count = 0;
    for (let a = 0; a < this.n; a++) if (a === current ? !others : this.runnable(a)) count++;
    if (count === 0) return this.st.main;
    let k = this.st.rand() % count;
    for (let a = 0; a < this.n; a++) {
      if (a === current ? !others : this.runnable(a)) {
        if (k === 0) return a;
        k--;
      }
    }
    return this.st.main;
  }

  private pickPct(current: number): number {
    const s = this.s;
    let best = -1;
    let bestPrio = -Infinity;
    for (let a = 0; a < this.n; a++) {
      if (a !== current && !this.runnable(a)) continue;
      const p = s[this.st.word(a, A_PRIO)];
      if (p > bestPrio) {
        bestPrio = p;
        best = a;
      }
    }
    return best < 0 ? this.st.main : best;
  }

  private slowPath(steps: number): void {
    const s = this.s;
    const m = this.m;
    // The run ends deterministically: a live violation, or every vCPU done.
    if (Atomics.load(m, CTRL.END) === 0) {
      if (Atomics.load(m, CTRL.FAILED) !== 0 || Atomics.load(m, CTRL.VCPUS_DONE) >= this.st.cfg.vcpus) {
        Atomics.store(m, CTRL.END, 1);
        Atomics.add(m, CTRL.CONTROL_GEN, 1);
      } else if (steps >= this.f[SIMF.STOP_AT] || Atomics.load(s, SIM.STOP_REQ) !== 0) {
        // An interrupted run ends here, at a step the report records; its
        // replay ends at the same check (STOP_AT), so the two runs are the
        // same up to the end, and the same after it.
        this.f[SIMF.STOPPED_AT] = steps;
        Atomics.store(m, CTRL.END, 1);
        Atomics.add(m, CTRL.CONTROL_GEN, 1);
      } else if (s[SIM.CHECKS_ON] && steps >= this.f[SIMF.NEXT_CHECK] && Atomics.load(m, CTRL.STOP) === 0) {
        this.f[SIMF.NEXT_CHECK] = steps + this.f[SIMF.CHECK_EVERY];
        Atomics.store(m, CTRL.STOP, 1);
        Atomics.add(m, CTRL.CONTROL_GEN, 1);
      }
    }
    // Livelock watch: some actor must complete work now and then.
    if ((steps & 0xffff) === 0 && this.progressBase >= 0) {
      let sum = 0;
      for (let a = 0; a < this.n; a++) sum = (sum + Atomics.load(m, this.progressBase + a * this.progressStride)) | 0;
      if (sum !== s[SIM.LAST_PROGRESS]) {
        s[SIM.LAST_PROGRESS] = sum;
        this.f[SIMF.PROGRESS_AT] = steps;
      } else if (steps - this.f[SIMF.PROGRESS_AT] > LIVELOCK_STEPS && s[SIM.LIVELOCK] === 0) {
        s[SIM.LIVELOCK] = 1;
        Atomics.store(m, CTRL.END, 1);
        Atomics.add(m, CTRL.CONTROL_GEN, 1);
      }
    }
  }

  private switchTo(next: number): void {
    this.handTo(next);
    this.waitTurn();
  }

  private handTo(next: number): void {
    this.st.handOver(this.me, next);
  }

  private waitTurn(): void {
    const t = this.st.word(this.me, A_TURN);
    // No spinning: on two cores, spinning waiters steal the running actor's
    // core (measured: 10x slower than sleeping on the futex at once).
    while (Atomics.load(this.s, t) === 0) Atomics.wait(this.s, t, 0);
  }
}

/**
 * The orchestrator's side (main thread): it holds the baton when nobody else
 * can run. It waits asynchronously so the event loop stays alive.
 */
export class SimMain {
  readonly me: number;
  constructor(
    readonly st: SimState,
    private readonly m: Int32Array,
  ) {
    this.me = st.main;
  }

  async waitReady(count: number, signal?: { aborted: boolean }): Promise<void> {
    const s = this.st.s;
    for (;;) {
      const r = Atomics.load(s, SIM.READY);
      if (r >= count || signal?.aborted) return;
      const w = Atomics.waitAsync(s, SIM.READY, r, 50);
      if (w.async) await w.value;
    }
  }

  /** Wait until the baton comes back to the main thread (or `stop()` says to give up). */
  async waitTurn(stop: () => boolean): Promise<boolean> {
    const s = this.st.s;
    const t = this.st.word(this.me, A_TURN);
    for (;;) {
      if (Atomics.load(s, t) !== 0) return true;
      if (stop()) return false;
      const w = Atomics.waitAsync(s, t, 0, 50);
      if (w.async) await w.value;
    }
  }

  /** Every actor blocked or done? And which are not parked at a safe point. */
  allParked(): boolean {
    const s = this.st.s;
    for (let a = 0; a < this.st.cfg.actors; a++) {
      const w = this.st.word(a, 0);
      if (s[w + A_STATE] === STATE_DONE) continue;
      if (s[w + A_STATE] !== STATE_BLOCKED || s[w + A_WAIT_IDX] !== CTRL.CONTROL_GEN) return false;
    }
    return true;
  }

  allDone(): boolean {
    for (let a = 0; a < this.st.cfg.actors; a++) if (this.st.s[this.st.word(a, A_STATE)] !== STATE_DONE) return false;
    return true;
  }

  /** Describe blocked actors: [actor, waited word] pairs. */
  blocked(): [number, number][] {
    const out: [number, number][] = [];
    for (let a = 0; a < this.st.cfg.actors; a++) {
      const w = this.st.word(a, 0);
      if (this.st.s[w + A_STATE] === STATE_BLOCKED) out.push([a, this.st.s[w + A_WAIT_IDX]]);
    }
    return out;
  }

  /** Hand the baton to the strategy's choice (any runnable actor); false if none. */
  resume(): boolean {
    const next = new SimSched(this.m, this.st, this.me).choose(-1);
    if (next === this.me) return false;
    this.st.handOver(this.me, next);
    return true;
  }

  /** Start: the first actor is the strategy's choice. */
  begin(): boolean {
    return this.resume();
  }
}
