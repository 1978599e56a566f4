/**
 * mmu_lock and the other spinlocks, as Atomics on words of shared memory.
 * Every lock knows its owner (actor id + 1 in the OWNER word), which is what
 * the `lock-held` invariant and the `progress` watchdog read.
 *
 * Two kinds behind one interface:
 * - ticket: the arm spinlock of the seed's era (arch/arm/include/asm/spinlock.h,
 *   next/owner tickets), FIFO fair;
 * - tas: test-and-set with bounded exponential back-off.
 *
 * Per call site statistics (lock_stat-like) are kept by the LockStats the lock
 * is given; with none, the lock counts nothing.
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
} as const;

/** lock_stat-like per-site statistics sink. */
export interface LockStatsSink {
  /**
   * Called after acquisition; `waitStart` is performance.now() when the wait
   * began (contended only); `bounce` when the previous owner was another actor.
   */
  acquired(actor: Actor, site: number, contended: boolean, waitStart: number, bounce: boolean): void;
  released(actor: Actor): void;
  /** Attribute the current hold to a more specific site (e.g. fault -> dissolve). */
  retag(actor: Actor, site: number): void;
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

export class TicketLock implements SpinLock {
  constructor(
    private readonly m: Int32Array,
    readonly base: number,
    private readonly stats: LockStatsSink | null = null,
  ) {}

  /** arch_spin_lock(): take a ticket, wait until it is served. */
  lock(actor: Actor, site: number): void {
    const m = this.m;
    const sched = actor.sched;
    sched.point(SITE['lock.acquire']);
    const ticket = Atomics.add(m, this.base + LOCKW.NEXT, 1);
    let serving = Atomics.load(m, this.base + LOCKW.SERVING);
    let contended = false;
    let t0 = 0;
    if (serving !== ticket) {
      contended = true;
      if (this.stats) t0 = performance.now();
      do {
        sched.waitWhile(this.base + LOCKW.SERVING, serving, SITE['lock.spin']);
        serving = Atomics.load(m, this.base + LOCKW.SERVING);
      } while (serving !== ticket);
    }
    Atomics.store(m, this.base + LOCKW.OWNER, actor.id + 1);
    Atomics.store(m, this.base + LOCKW.OWNER_SITE, site);
    if (this.stats) {
      const last = m[this.base + LOCKW.LAST_OWNER];
      m[this.base + LOCKW.LAST_OWNER] = actor.id + 1;
      this.stats.acquired(actor, site, contended, t0, last !== 0 && last !== actor.id + 1);
    }
  }

  /** arch_spin_unlock(): serve the next ticket. */
  unlock(actor: Actor): void {
    const m = this.m;
    if (Atomics.load(m, this.base + LOCKW.OWNER) !== actor.id + 1) {
      throw new Error(`actor ${actor.id} unlocks a lock it does not hold (owner ${this.owner()})`);
    }
    if (this.stats) this.stats.released(actor);
    Atomics.store(m, this.base + LOCKW.OWNER, 0);
    Atomics.add(m, this.base + LOCKW.SERVING, 1);
    actor.sched.point(SITE['lock.release']);
  }

  owner(): number {
    return Atomics.load(this.m, this.base + LOCKW.OWNER) - 1;
  }
  heldBy(actor: Actor): boolean {
    return Atomics.load(this.m, this.base + LOCKW.OWNER) === actor.id + 1;
  }
  retag(actor: Actor, site: number): void {
    if (this.stats) this.stats.retag(actor, site);
  }
}

const TAS_MAX_BACKOFF = 1024;

export class TasLock implements SpinLock {
  constructor(
    private readonly m: Int32Array,
    readonly base: number,
    private readonly stats: LockStatsSink | null = null,
  ) {}

  lock(actor: Actor, site: number): void {
    const m = this.m;
    const sched = actor.sched;
    sched.point(SITE['lock.acquire']);
    let contended = false;
    let t0 = 0;
    let backoff = 1;
    while (Atomics.compareExchange(m, this.base + LOCKW.NEXT, 0, 1) !== 0) {
      if (!contended) {
        contended = true;
        if (this.stats) t0 = performance.now();
      }
      // test-and-test-and-set with bounded exponential back-off
      for (let i = 0; i < backoff && Atomics.load(m, this.base + LOCKW.NEXT) !== 0; i++) {
        /* spin */
      }
      if (backoff < TAS_MAX_BACKOFF) backoff <<= 1;
      sched.waitWhile(this.base + LOCKW.NEXT, 1, SITE['lock.spin']);
    }
    Atomics.store(m, this.base + LOCKW.OWNER, actor.id + 1);
    Atomics.store(m, this.base + LOCKW.OWNER_SITE, site);
    if (this.stats) {
      const last = m[this.base + LOCKW.LAST_OWNER];
      m[this.base + LOCKW.LAST_OWNER] = actor.id + 1;
      this.stats.acquired(actor, site, contended, t0, last !== 0 && last !== actor.id + 1);
    }
  }

  unlock(actor: Actor): void {
    const m = this.m;
    if (Atomics.load(m, this.base + LOCKW.OWNER) !== actor.id + 1) {
      throw new Error(`actor ${actor.id} unlocks a lock it does not hold (owner ${this.owner()})`);
    }
    if (this.stats) this.stats.released(actor);
    Atomics.store(m, this.base + LOCKW.OWNER, 0);
    Atomics.store(m, this.base + LOCKW.NEXT, 0);
    actor.sched.point(SITE['lock.release']);
  }

  owner(): number {
    return Atomics.load(this.m, this.base + LOCKW.OWNER) - 1;
  }
  heldBy(actor: Actor): boolean {
    return Atomics.load(this.m, this.base + LOCKW.OWNER) === actor.id + 1;
  }
  retag(actor: Actor, site: number): void {
    if (this.stats) this.stats.retag(actor, site);
  }
}
