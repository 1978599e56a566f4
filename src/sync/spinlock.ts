/**
 * mmu_lock and the other spinlocks, as Atomics on words of shared memory.
 * Every lock knows its owner (actor id + 1 in the OWNER word), which is what
 * the `lock-held` invariant and the `progress` watchdog read.
 *
 * Two kinds behind one interface (`--lock`):
 * - ticket: the arm spinlock of the seed's era (arch/arm/include/asm/spinlock.h,
 *   next/owner tickets), FIFO fair; the default;
 * - tas: test-and-set with bounded exponential back-off (test-and-test-and-set).
 *
 * Cost. An uncontended acquire+release is two locked instructions, as the
 * bare compare-exchange + store pair it is measured against (`s2stress
 * bench`): ticket = Atomics.add(NEXT) .. Atomics.add(SERVING), tas =
 * Atomics.compareExchange .. Atomics.store. The OWNER, OWNER_SITE and
 * LAST_OWNER words are written with plain stores inside the critical
 * section: the release (a seq_cst Atomics write) orders them for the next
 * holder, the owner reads back its own writes (`heldBy`, `unlock`), and
 * observers that do not hold the lock (watchdog, reports) read them with
 * Atomics.load and only need "some recent value".
 *
 * Waiting. A waiter spins, then sleeps in short Atomics.wait back-offs
 * (Sched.waitWhile); the release wakes the sleepers (Atomics.notify) when
 * the WAITERS word says there are any. That is the arm ticket lock's WFE in
 * the waiter and dsb_sev() in arch_spin_unlock(). Without the wake-up, a
 * FIFO lock handed to a sleeping waiter stays idle until its back-off ends,
 * and with more threads than cores the ticket lock's throughput collapses.
 * The seq_cst release and WAITERS increment pair as in Dekker's protocol:
 * either the releaser sees the waiter, or the waiter sees the release before
 * it sleeps (Atomics.wait re-checks the word atomically).
 *
 * Statistics (lock_stat, see lockstat.ts) are kept through the sink the lock
 * is given; with none (`--no-lock-stats`) the lock times and counts nothing.
 * The in-flight hold (site, contended, wait, hold start) lives in this
 * object: each thread builds its own lock objects over the shared words, and
 * one lock has one holder at a time. It is reported to the sink once per
 * acquisition, after the release, at the site the hold ended with (after any
 * re-tag), so that the timing and the recording stay outside the critical
 * section except for the clock reads themselves.
 */
import type { Actor } from './actor.js';
import { SITE } from './sites.js';

/** Word offsets inside a lock block (LOCK_WORDS long). */
export const LOCKW = {
  /** ticket: next ticket to hand out; tas: the lock word. */
  NEXT: 0,
  /** ticket: ticket now served. */
  SERVING: 1,
  /** Owner actor id + 1, 0 when free. */
  OWNER: 2,
  /** Site the owner took it at (for reports). */
  OWNER_SITE: 3,
  /** Last owner (actor id + 1), for counting owner changes (bounces). */
  LAST_OWNER: 4,
  /** Waiters that may be asleep (Atomics.wait), to be woken by the release. */
  WAITERS: 5,
} as const;

/**
 * lock_stat-like per-call-site statistics sink (one per thread; the
 * orchestrator merges them at the end of a run).
 */
export interface LockStatsSink {
  /**
   * Time the hold of this uncontended acquisition? (Hold-time sampling; a
   * contended acquisition is always timed, its wait must be anyway.)
   */
  sampleHold(): boolean;
  /**
   * One acquisition, reported after its release. `site` is the final site
   * (after any re-tag); `bounce` when the previous owner was another actor;
   * `waitNs` the wait of a contended acquisition (0 otherwise); `holdNs` the
   * hold time, or -1 when this hold was not timed.
   */
  record(site: number, contended: boolean, bounce: boolean, waitNs: number, holdNs: number): void;
}

export interface SpinLock {
  readonly base: number;
  lock(actor: Actor, site: number): void;
  unlock(actor: Actor): void;
  /** Actor id of the owner, or -1. */
  owner(): number;
  heldBy(actor: Actor): boolean;
  /** Attribute the current hold to another call site (statistics only). */
  retag(actor: Actor, site: number): void;
}

const NS_PER_MS = 1e6;

/**
 * What both kinds share: ownership words, the in-flight hold, and the
 * report of an acquisition to the sink.
 */
abstract class StatLock {
  /** Site of the current hold (re-tagged by retag()). */
  protected site = 0;
  protected contended = false;
  protected bounce = false;
  /** Wait of the current hold, ns (contended only). */
  protected waitNs = 0;
  /** performance.now() when the current hold began, -1 when it is not timed. */
  protected holdStart = -1;

  constructor(
    protected readonly m: Int32Array,
    readonly base: number,
    protected readonly stats: LockStatsSink | null,
  ) {}

  /** Mark the new owner. Plain stores: see the file comment. */
  protected owned(actor: Actor, site: number): void {
    const m = this.m;
    m[this.base + LOCKW.OWNER] = actor.id + 1;
    m[this.base + LOCKW.OWNER_SITE] = site;
  }

  /** Statistics of an acquisition that did not wait. */
  protected noteUncontended(actor: Actor, site: number, stats: LockStatsSink): void {
    this.noteOwner(actor, site);
    this.contended = false;
    this.waitNs = 0;
    this.holdStart = stats.sampleHold() ? performance.now() : -1;
  }

  /** Statistics of an acquisition that waited since `t0` (performance.now()). */
  protected noteContended(actor: Actor, site: number, t0: number): void {
    const now = performance.now();
    this.noteOwner(actor, site);
    this.contended = true;
    this.waitNs = (now - t0) * NS_PER_MS;
    this.holdStart = now;
  }

  private noteOwner(actor: Actor, site: number): void {
    const m = this.m;
    const me = actor.id + 1;
    const last = m[this.base + LOCKW.LAST_OWNER];
    m[this.base + LOCKW.LAST_OWNER] = me;
    this.bounce = last !== 0 && last !== me;
    this.site = site;
  }

  /** Throws unless `actor` holds the lock (an unlock by a non-owner is a harness bug). */
  protected checkOwner(actor: Actor): void {
    if (this.m[this.base + LOCKW.OWNER] !== actor.id + 1) {
      throw new Error(`actor ${actor.id} unlocks a lock it does not hold (owner ${this.owner()})`);
    }
  }

  owner(): number {
    return Atomics.load(this.m, this.base + LOCKW.OWNER) - 1;
  }
  heldBy(actor: Actor): boolean {
    return Atomics.load(this.m, this.base + LOCKW.OWNER) === actor.id + 1;
  }
  retag(_actor: Actor, site: number): void {
    this.site = site;
  }
}

export class TicketLock extends StatLock implements SpinLock {
  constructor(m: Int32Array, base: number, stats: LockStatsSink | null = null) {
    super(m, base, stats);
  }

  /** arch_spin_lock(): take a ticket, wait until it is served. */
  lock(actor: Actor, site: number): void {
    const m = this.m;
    actor.sched.point(SITE['lock.acquire']);
    const ticket = Atomics.add(m, this.base + LOCKW.NEXT, 1);
    const serving = Atomics.load(m, this.base + LOCKW.SERVING);
    if (serving !== ticket) {
      this.lockSlow(actor, site, ticket, serving);
      return;
    }
    this.owned(actor, site);
    const stats = this.stats;
    if (stats !== null) this.noteUncontended(actor, site, stats);
  }

  private lockSlow(actor: Actor, site: number, ticket: number, serving: number): void {
    const m = this.m;
    const t0 = this.stats !== null ? performance.now() : 0;
    Atomics.add(m, this.base + LOCKW.WAITERS, 1);
    do {
      actor.sched.waitWhile(this.base + LOCKW.SERVING, serving, SITE['lock.spin']);
      serving = Atomics.load(m, this.base + LOCKW.SERVING);
    } while (serving !== ticket);
    Atomics.sub(m, this.base + LOCKW.WAITERS, 1);
    this.owned(actor, site);
    if (this.stats !== null) this.noteContended(actor, site, t0);
  }

  /** arch_spin_unlock(): serve the next ticket. */
  unlock(actor: Actor): void {
    this.checkOwner(actor);
    const m = this.m;
    const stats = this.stats;
    if (stats === null) {
      m[this.base + LOCKW.OWNER] = 0;
      Atomics.add(m, this.base + LOCKW.SERVING, 1);
      if (Atomics.load(m, this.base + LOCKW.WAITERS) !== 0) Atomics.notify(m, this.base + LOCKW.SERVING);
    } else {
      // Read the in-flight hold before the release: once released, another
      // actor of this thread (sim mode, scripted tests) may take the lock.
      const start = this.holdStart;
      const holdNs = start >= 0 ? (performance.now() - start) * NS_PER_MS : -1;
      const site = this.site;
      const contended = this.contended;
      const bounce = this.bounce;
      const waitNs = this.waitNs;
      m[this.base + LOCKW.OWNER] = 0;
      Atomics.add(m, this.base + LOCKW.SERVING, 1);
      if (Atomics.load(m, this.base + LOCKW.WAITERS) !== 0) Atomics.notify(m, this.base + LOCKW.SERVING);
      stats.record(site, contended, bounce, waitNs, holdNs);
    }
    actor.sched.point(SITE['lock.release']);
  }
}

const TAS_MAX_BACKOFF = 1024;

export class TasLock extends StatLock implements SpinLock {
  constructor(m: Int32Array, base: number, stats: LockStatsSink | null = null) {
    super(m, base, stats);
  }

  lock(actor: Actor, site: number): void {
    const m = this.m;
    actor.sched.point(SITE['lock.acquire']);
    if (Atomics.compareExchange(m, this.base + LOCKW.NEXT, 0, 1) !== 0) {
      this.lockSlow(actor, site);
      return;
    }
    this.owned(actor, site);
    const stats = this.stats;
    if (stats !== null) this.noteUncontended(actor, site, stats);
  }

  private lockSlow(actor: Actor, site: number): void {
    const m = this.m;
    const t0 = this.stats !== null ? performance.now() : 0;
    let backoff = 1;
    Atomics.add(m, this.base + LOCKW.WAITERS, 1);
    do {
      // test-and-test-and-set with bounded exponential back-off
      for (let i = 0; i < backoff && Atomics.load(m, this.base + LOCKW.NEXT) !== 0; i++) {
        /* spin */
      }
      if (backoff < TAS_MAX_BACKOFF) backoff <<= 1;
      actor.sched.waitWhile(this.base + LOCKW.NEXT, 1, SITE['lock.spin']);
    } while (Atomics.compareExchange(m, this.base + LOCKW.NEXT, 0, 1) !== 0);
    Atomics.sub(m, this.base + LOCKW.WAITERS, 1);
    this.owned(actor, site);
    if (this.stats !== null) this.noteContended(actor, site, t0);
  }

  unlock(actor: Actor): void {
    this.checkOwner(actor);
    const m = this.m;
    const stats = this.stats;
    if (stats === null) {
      m[this.base + LOCKW.OWNER] = 0;
      Atomics.store(m, this.base + LOCKW.NEXT, 0);
      if (Atomics.load(m, this.base + LOCKW.WAITERS) !== 0) Atomics.notify(m, this.base + LOCKW.NEXT);
    } else {
      const start = this.holdStart;
      const holdNs = start >= 0 ? (performance.now() - start) * NS_PER_MS : -1;
      const site = this.site;
      const contended = this.contended;
      const bounce = this.bounce;
      const waitNs = this.waitNs;
      m[this.base + LOCKW.OWNER] = 0;
      Atomics.store(m, this.base + LOCKW.NEXT, 0);
      if (Atomics.load(m, this.base + LOCKW.WAITERS) !== 0) Atomics.notify(m, this.base + LOCKW.NEXT);
      stats.record(site, contended, bounce, waitNs, holdNs);
    }
    actor.sched.point(SITE['lock.release']);
  }
}
