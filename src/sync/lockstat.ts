/**
 * lock_stat for mmu_lock: per call site, acquisitions, contentions, owner
 * changes (bounces), wait time (contended acquisitions only, as lock_stat
 * does) and hold time. Each actor keeps its own statistics in thread-local
 * memory (no shared cache line on the hot path); the orchestrator merges
 * the snapshots the workers return at the end of a run.
 */
import type { Actor } from './actor.js';
import type { LockStatsSink } from './spinlock.js';
import { LOCK_SITE_NAMES } from './locksites.js';

export interface TimeStats {
  min: number;
  max: number;
  total: number;
  avg: number;
  p50: number;
  p99: number;
}

export interface LockSiteReport {
  site: string;
  acquisitions: number;
  contentions: number;
  bounces: number;
  waitNs: TimeStats;
  holdNs: TimeStats;
}

export interface LockReport {
  kind: string;
  acquisitions: number;
  contentions: number;
  bounces: number;
  waitNs: TimeStats;
  holdNs: TimeStats;
  sites: LockSiteReport[];
}

/** Serializable per-actor statistics (what a worker returns). */
export interface LockStatsSnapshot {
  sites: { acq: number; cont: number; bounces: number; wait: number[]; hold: number[] }[];
}

const MAX_SAMPLES = 1 << 14;

/** Reservoir of samples (ns) kept for percentiles, bounded. */
class Samples {
  readonly buf = new Float64Array(MAX_SAMPLES);
  n = 0;
  seen = 0;
  min = Infinity;
  max = 0;
  total = 0;
  private x = 0x2545f491;
  add(ns: number): void {
    this.seen++;
    this.total += ns;
    if (ns < this.min) this.min = ns;
    if (ns > this.max) this.max = ns;
    if (this.n < MAX_SAMPLES) {
      this.buf[this.n++] = ns;
    } else {
      this.x ^= this.x << 13;
      this.x ^= this.x >>> 17;
      this.x ^= this.x << 5;
      const j = (this.x >>> 0) % this.seen;
      if (j < MAX_SAMPLES) this.buf[j] = ns;
    }
  }
  toArray(): number[] {
    return Array.from(this.buf.subarray(0, this.n));
  }
}

export class LockStats implements LockStatsSink {
  private readonly acq: Float64Array;
  private readonly cont: Float64Array;
  private readonly bounces: Float64Array;
  private readonly wait: Samples[];
  private readonly hold: Samples[];
  private holdStart = 0;
  private site = 0;
  constructor() {
    const n = LOCK_SITE_NAMES.length;
    this.acq = new Float64Array(n);
    this.cont = new Float64Array(n);
    this.bounces = new Float64Array(n);
    this.wait = Array.from({ length: n }, () => new Samples());
    this.hold = Array.from({ length: n }, () => new Samples());
  }
  acquired(_actor: Actor, site: number, contended: boolean, waitStart: number, bounce: boolean): void {
    const now = performance.now();
    this.acq[site]++;
    if (bounce) this.bounces[site]++;
    if (contended) {
      this.cont[site]++;
      this.wait[site].add((now - waitStart) * 1e6);
    }
    this.site = site;
    this.holdStart = now;
  }
  retag(_actor: Actor, site: number): void {
    this.site = site;
  }
  released(_actor: Actor): void {
    this.hold[this.site].add((performance.now() - this.holdStart) * 1e6);
  }
  snapshot(): LockStatsSnapshot {
    return {
      sites: LOCK_SITE_NAMES.map((_, i) => ({
        acq: this.acq[i],
        cont: this.cont[i],
        bounces: this.bounces[i],
        wait: this.wait[i].toArray(),
        hold: this.hold[i].toArray(),
      })),
    };
  }
}

function timeStats(samples: number[], total: number, count: number): TimeStats {
  if (samples.length === 0 || count === 0) return { min: 0, max: 0, total: 0, avg: 0, p50: 0, p99: 0 };
  const s = Float64Array.from(samples).sort();
  const q = (p: number): number => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return { min: s[0], max: s[s.length - 1], total, avg: total / count, p50: q(0.5), p99: q(0.99) };
}

export function emptyLockReport(kind: string): LockReport {
  const z = timeStats([], 0, 0);
  return { kind, acquisitions: 0, contentions: 0, bounces: 0, waitNs: z, holdNs: z, sites: [] };
}

/** Merge worker snapshots into the report's `lock` field. */
export function mergeLockStats(kind: string, snaps: LockStatsSnapshot[]): LockReport {
  const r = emptyLockReport(kind);
  const allWait: number[] = [];
  const allHold: number[] = [];
  let waitTotal = 0;
  let holdTotal = 0;
  for (let i = 0; i < LOCK_SITE_NAMES.length; i++) {
    let acq = 0;
    let cont = 0;
    let bounces = 0;
    const wait: number[] = [];
    const hold: number[] = [];
    for (const s of snaps) {
      const x = s.sites[i];
      if (!x) continue;
      acq += x.acq;
      cont += x.cont;
      bounces += x.bounces;
      for (const v of x.wait) wait.push(v);
      for (const v of x.hold) hold.push(v);
    }
    if (acq === 0) continue;
    const wt = wait.reduce((a, b) => a + b, 0);
    const ht = hold.reduce((a, b) => a + b, 0);
    waitTotal += wt;
    holdTotal += ht;
    allWait.push(...wait);
    allHold.push(...hold);
    r.sites.push({ site: LOCK_SITE_NAMES[i], acquisitions: acq, contentions: cont, bounces, waitNs: timeStats(wait, wt, wait.length), holdNs: timeStats(hold, ht, hold.length) });
    r.acquisitions += acq;
    r.contentions += cont;
    r.bounces += bounces;
  }
  r.waitNs = timeStats(allWait, waitTotal, allWait.length);
  r.holdNs = timeStats(allHold, holdTotal, allHold.length);
  return r;
}

function ns(n: number): string {
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}ms`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}us`;
  return `${Math.round(n)}ns`;
}

/** A /proc/lock_stat-style table. */
export function formatLockTable(r: LockReport): string {
  const head = ['site', 'contentions', 'bounces', 'wait-min', 'wait-max', 'wait-total', 'wait-avg', 'wait-p99', 'acquisitions', 'hold-min', 'hold-max', 'hold-total', 'hold-avg', 'hold-p99'];
  const rows = r.sites.map((s) => [
    s.site,
    `${s.contentions}`,
    `${s.bounces}`,
    ns(s.waitNs.min),
    ns(s.waitNs.max),
    ns(s.waitNs.total),
    ns(s.waitNs.avg),
    ns(s.waitNs.p99),
    `${s.acquisitions}`,
    ns(s.holdNs.min),
    ns(s.holdNs.max),
    ns(s.holdNs.total),
    ns(s.holdNs.avg),
    ns(s.holdNs.p99),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const fmt = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [`mmu_lock (${r.kind}) lock_stat:`, fmt(head), ...rows.map(fmt)].join('\n');
}
