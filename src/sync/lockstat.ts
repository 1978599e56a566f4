/**
 * lock_stat for mmu_lock (Documentation/locking/lockstat.rst): per call site,
 * acquisitions, contentions, owner changes (con-bounces, acq-bounces), wait
 * time (contended acquisitions only, as lock_stat does) and hold time, each
 * as min / max / total / avg / p50 / p99.
 *
 * Each thread keeps its own LockStats in thread-local memory (no shared
 * cache line on the hot path); a worker returns a snapshot at the end of the
 * run and the orchestrator merges them (mergeLockStats).
 *
 * Histograms: HdrHistogram (hdr-histogram-js), pure JS variant. Chosen over
 * Node's perf_hooks.createHistogram() because
 * - sampled hold times are recorded with a weight (recordValueWithCount);
 *   the perf_hooks histogram records one value at a time, and not 0;
 * - it serializes to the standard compressed HdrHistogram encoding (base64),
 *   which crosses the piscina result channel as a plain string and is merged
 *   with add() on the main thread;
 * and over the library's WebAssembly variant because that one needs an
 * initialisation in every worker (initWebAssembly, or initWebAssemblySync)
 * and an explicit destroy() of every histogram (they live in the WASM heap),
 * for a speed-up (~117 -> ~33 ns per record, measured here) paid only on
 * timed acquisitions, after the release. Both variants were checked to
 * record, encode, decode and merge across worker threads; the JS one is
 * what test/lock/stats.test.ts ("merge across worker threads") covers.
 * Min, max and total are kept exactly beside the histogram; the histogram
 * (3 significant digits, 64-bit counts) gives the percentiles.
 *
 * Cost: the clock is what makes lock_stat expensive (performance.now() is
 * ~40 ns here, more than the bare compare-exchange + store pair a lock is
 * measured against, and a timed hold reads it twice, once inside the
 * critical section). So:
 * - counts (acquisitions, contentions, bounces) are exact, counted under
 *   the lock with a few plain memory operations;
 * - wait time is measured for every contended acquisition, as lock_stat
 *   does (one clock read when the wait begins, one when it ends: that one
 *   is inside the critical section, as lock_stat's lock_acquired() is);
 * - hold time is measured for every acquisition among the first
 *   EXACT_FIRST_HOLDS of each site (per thread), so rare sites such as
 *   wp-enable or harvest are exact, then for one acquisition in
 *   `holdSampleEvery` on average (seeded random gaps, so that no periodic
 *   pattern of the workload aliases with the sampling), recorded with that
 *   weight: hold totals, averages and percentiles of busy sites are
 *   unbiased estimates; `--lock-hold-sample 1` times every hold. A hold
 *   re-tagged to another site (a fault that dissolves a block or maps one)
 *   that was not being timed is timed from the re-tag on, by that site's
 *   own count, so the dissolve and block-map rows are exact for their first
 *   EXACT_FIRST_HOLDS too (less the fault's first steps before the re-tag).
 *   The fast path counts one site's countdown down per acquisition; why the
 *   exact phase is not longer: while it lasts, timing looks hot to V8, and
 *   code compiled then inlines the timing and loses the inlining of the
 *   counting (measured: 512 exact holds made the uncontended lock+unlock
 *   1.7x-2x the bare pair in about half the runs, 128 or fewer never);
 * - histograms are fed after the release, outside the critical section, in
 *   batches (timed() queues, flush() records).
 *
 * Sides: an rwlock's read acquisitions are kept on rows of their own, as
 * /proc/lock_stat shows `&kvm->mmu_lock-R` apart from `&kvm->mmu_lock-W`:
 * a LockStats has a write row and a read row per call site (READ_ROW in
 * locksites.ts), each with its own counts, sampling and histograms. A
 * spinlock's acquisitions are all exclusive: they go to the write rows, so
 * a spinlock run has the same rows as before there were sides.
 */
import * as hdr from 'hdr-histogram-js';
import type { LockStatsSink } from './spinlock.js';
import { LOCK_ROWS, LOCK_SITE_NAMES, READ_ROW } from './locksites.js';

/** One hold in this many is timed, after a site's first ones (a power of two; 1 = every hold, as lock_stat). */
export const DEFAULT_HOLD_SAMPLE = 256;
export const MAX_HOLD_SAMPLE = 1 << 16;
/** Acquisitions of each site (per thread) whose holds are all timed before sampling starts. */
export const EXACT_FIRST_HOLDS = 128;

/** Timed acquisitions queued before they are recorded into the histograms. */
const PENDING_TIMES = 64;

export interface TimeStats {
  min: number;
  max: number;
  total: number;
  avg: number;
  p50: number;
  p99: number;
}

/** read: read_lock() of an rwlock; write: write_lock() of an rwlock, and every acquisition of a spinlock (exclusive). */
export type LockSide = 'read' | 'write';

/** One row of the table: one call site of mmu_lock (see locksites.ts), one side. */
export interface LockSiteReport {
  site: string;
  /** Which side of the lock the row counts (added with the rwlock: spinlock rows are 'write'). */
  side: LockSide;
  acquisitions: number;
  contentions: number;
  /** acq-bounces: acquisitions whose previous owner was another actor. */
  bounces: number;
  /** con-bounces: contended acquisitions whose previous owner was another actor. */
  conBounces: number;
  /** Wait of contended acquisitions, ns; avg = total / contentions. */
  waitNs: TimeStats;
  /** Hold, ns; avg = total / acquisitions (estimates when sampled). */
  holdNs: TimeStats;
  /** Holds actually timed (the rest are represented by the weighted samples). */
  holdTimed: number;
}

/** One side's totals over its rows. */
export interface LockSideTotals {
  acquisitions: number;
  contentions: number;
  bounces: number;
  conBounces: number;
  waitNs: TimeStats;
  holdNs: TimeStats;
}

/** The report's `lock` field (docs/design.md section 5). */
export interface LockReport {
  kind: string;
  /** False with --no-lock-stats: no lock data was kept. */
  enabled: boolean;
  /** One uncontended hold in this many was timed (1: all). */
  holdSampleEvery: number;
  acquisitions: number;
  contentions: number;
  bounces: number;
  conBounces: number;
  waitNs: TimeStats;
  holdNs: TimeStats;
  /** Rows with acquisitions: the write (exclusive) rows in site order, then the read rows. */
  sites: LockSiteReport[];
  /** Totals per side (the lock's totals above are over both). */
  sides: { write: LockSideTotals; read: LockSideTotals };
}

/** Serializable per-site statistics of one thread. Histograms are compressed HdrHistogram encodings. */
export interface LockSiteSnapshot {
  acq: number;
  cont: number;
  bounces: number;
  conBounces: number;
  waitMin: number;
  waitMax: number;
  waitTotal: number;
  holdMin: number;
  holdMax: number;
  holdTotal: number;
  holdTimed: number;
  wait: string | null;
  hold: string | null;
}

/** Serializable per-thread statistics (what a worker returns). */
export interface LockStatsSnapshot {
  holdSampleEvery: number;
  /** LOCK_ROWS rows: the write row of each site, then its read row (READ_ROW + site). */
  sites: LockSiteSnapshot[];
}

type Histogram = hdr.Histogram;

/** HdrHistogram of nanoseconds: 1 ns .. grows as needed, 3 significant digits, 64-bit counts. */
function newHistogram(): Histogram {
  return hdr.build({
    bitBucketSize: 64,
    autoResize: true,
    lowestDiscernibleValue: 1,
    highestTrackableValue: 1_000_000,
    numberOfSignificantValueDigits: 3,
    useWebAssembly: false,
  });
}

function encode(h: Histogram | null): string | null {
  return h === null || h.totalCount === 0 ? null : hdr.encodeIntoCompressedBase64(h);
}

function decode(s: string): Histogram {
  return hdr.decodeFromCompressedBase64(s, 64, false);
}

export class LockStats implements LockStatsSink {
  readonly holdSampleEvery: number;
  private readonly mask: number;
  private x: number;
  /**
   * Per site: acquisitions left before the next timed one (1 during the
   * site's exact first ones). Counting down one word per acquisition is
   * all the fast path does for sampling.
   */
  private readonly countdown: Int32Array;
  /** Acquisitions of each site timed exactly (weight 1) before its sampling starts. */
  private readonly exactFirst: number;
  private readonly acq: Float64Array;
  private readonly cont: Float64Array;
  private readonly bounces: Float64Array;
  private readonly conBounces: Float64Array;
  private readonly waitMin: Float64Array;
  private readonly waitMax: Float64Array;
  private readonly waitTotal: Float64Array;
  private readonly holdMin: Float64Array;
  private readonly holdMax: Float64Array;
  private readonly holdTotal: Float64Array;
  private readonly holdTimed: Float64Array;
  /** Times queued by timed(), four numbers each: site, wait, hold, weight. */
  private readonly pending = new Float64Array(4 * PENDING_TIMES);
  private npending = 0;
  /** Created on a site's first timed acquisition. */
  private readonly waitH: (Histogram | null)[];
  private readonly holdH: (Histogram | null)[];

  /**
   * `holdSampleEvery`: a power of two (1 = time every hold); `seed` seeds
   * the sampling (a run derives it from the run seed and the actor).
   */
  constructor(holdSampleEvery = DEFAULT_HOLD_SAMPLE, seed = 0x2545f491) {
    if (!Number.isInteger(holdSampleEvery) || holdSampleEvery < 1 || holdSampleEvery > MAX_HOLD_SAMPLE || (holdSampleEvery & (holdSampleEvery - 1)) !== 0) {
      throw new RangeError(`holdSampleEvery must be a power of two from 1 to ${MAX_HOLD_SAMPLE}, got ${holdSampleEvery}`);
    }
    this.holdSampleEvery = holdSampleEvery;
    this.mask = holdSampleEvery - 1;
    this.x = seed | 0 || 0x2545f491;
    const n = LOCK_ROWS;
    this.countdown = new Int32Array(n).fill(1);
    this.acq = new Float64Array(n);
    this.cont = new Float64Array(n);
    this.bounces = new Float64Array(n);
    this.conBounces = new Float64Array(n);
    this.waitMin = new Float64Array(n).fill(Infinity);
    this.waitMax = new Float64Array(n);
    this.waitTotal = new Float64Array(n);
    this.holdMin = new Float64Array(n).fill(Infinity);
    this.holdMax = new Float64Array(n);
    this.holdTotal = new Float64Array(n);
    this.holdTimed = new Float64Array(n);
    this.exactFirst = holdSampleEvery > 1 ? EXACT_FIRST_HOLDS : 0;
    this.waitH = new Array<Histogram | null>(n).fill(null);
    this.holdH = new Array<Histogram | null>(n).fill(null);
  }

  acquired(site: number, contended: boolean, bounce: boolean): number {
    const acq = this.acq;
    acq[site]++;
    if (contended || bounce) this.countRare(site, contended, bounce, 1);
    const cd = this.countdown;
    if (--cd[site] !== 0) return 0;
    return this.nextTimed(site);
  }

  moved(from: number, to: number, contended: boolean, bounce: boolean, timed: boolean): number {
    this.acq[from]--;
    this.acq[to]++;
    if (contended || bounce) {
      this.countRare(from, contended, bounce, -1);
      this.countRare(to, contended, bounce, 1);
    }
    if (timed) return 0;
    if (--this.countdown[to] !== 0) return 0;
    return this.nextTimed(to);
  }

  /** Contentions and bounces, out of the fast path. */
  private countRare(site: number, contended: boolean, bounce: boolean, d: number): void {
    if (bounce) this.bounces[site] += d;
    if (contended) {
      this.cont[site] += d;
      if (bounce) this.conBounces[site] += d;
    }
  }

  /**
   * The site's countdown ran out: this acquisition is timed. The first
   * EXACT_FIRST_HOLDS of a site are all timed exactly (weight 1: rare sites
   * stay exact); after that, one in `holdSampleEvery` on average, with that
   * weight.
   */
  private nextTimed(site: number): number {
    if (this.acq[site] <= this.exactFirst) {
      this.countdown[site] = 1;
      return 1;
    }
    this.countdown[site] = this.nextGap();
    return this.holdSampleEvery;
  }

  /**
   * Queued, and recorded PENDING_TIMES at a time (flush): the lock's release
   * path then only stores four numbers, and the histogram code stays out of
   * it (V8 would otherwise inline it there while the first, exact holds of
   * the sites make it look hot, and the fast path would lose the inlining of
   * its counting).
   */
  timed(site: number, waitNs: number, holdNs: number, holdWeight: number): void {
    const q = this.pending;
    const k = this.npending;
    q[k] = site;
    q[k + 1] = waitNs;
    q[k + 2] = holdNs;
    q[k + 3] = holdWeight;
    this.npending = k + 4;
    if (k + 4 === q.length) this.flush();
  }

  /** Record the queued times. */
  flush(): void {
    const q = this.pending;
    const n = this.npending;
    this.npending = 0;
    for (let k = 0; k < n; k += 4) {
      const site = q[k];
      const waitNs = q[k + 1];
      const holdNs = q[k + 2];
      if (waitNs >= 0) this.recordWait(site, waitNs);
      if (holdNs >= 0) this.recordHold(site, holdNs, q[k + 3]);
    }
  }

  /**
   * Acquisitions until the next timed hold: uniform in
   * [1, 2N - 1] (mean N, the sampling rate; random gaps, so that no periodic
   * pattern of the workload aliases with the sampling).
   */
  private nextGap(): number {
    if (this.mask === 0) return 1;
    let x = this.x;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.x = x;
    return 1 + ((x >>> 0) % (2 * this.holdSampleEvery - 1));
  }

  private recordWait(site: number, ns: number): void {
    if (ns < this.waitMin[site]) this.waitMin[site] = ns;
    if (ns > this.waitMax[site]) this.waitMax[site] = ns;
    this.waitTotal[site] += ns;
    let h = this.waitH[site];
    if (h === null) h = this.waitH[site] = newHistogram();
    h.recordValue(Math.round(ns));
  }

  private recordHold(site: number, ns: number, weight: number): void {
    if (ns < this.holdMin[site]) this.holdMin[site] = ns;
    if (ns > this.holdMax[site]) this.holdMax[site] = ns;
    this.holdTotal[site] += ns * weight;
    this.holdTimed[site]++;
    let h = this.holdH[site];
    if (h === null) h = this.holdH[site] = newHistogram();
    h.recordValueWithCount(Math.round(ns), weight);
  }

  snapshot(): LockStatsSnapshot {
    this.flush();
    return {
      holdSampleEvery: this.holdSampleEvery,
      sites: Array.from({ length: LOCK_ROWS }, (_, i) => ({
        acq: this.acq[i],
        cont: this.cont[i],
        bounces: this.bounces[i],
        conBounces: this.conBounces[i],
        waitMin: this.cont[i] > 0 ? this.waitMin[i] : 0,
        waitMax: this.waitMax[i],
        waitTotal: this.waitTotal[i],
        holdMin: this.holdTimed[i] > 0 ? this.holdMin[i] : 0,
        holdMax: this.holdMax[i],
        holdTotal: this.holdTotal[i],
        holdTimed: this.holdTimed[i],
        wait: encode(this.waitH[i]),
        hold: encode(this.holdH[i]),
      })),
    };
  }
}

const ZERO: TimeStats = { min: 0, max: 0, total: 0, avg: 0, p50: 0, p99: 0 };

/** Accumulates one row (or the whole lock) from per-thread snapshots. */
class Acc {
  acq = 0;
  cont = 0;
  bounces = 0;
  conBounces = 0;
  waitMin = Infinity;
  waitMax = 0;
  waitTotal = 0;
  holdMin = Infinity;
  holdMax = 0;
  holdTotal = 0;
  holdTimed = 0;
  wait: Histogram | null = null;
  hold: Histogram | null = null;

  add(s: LockSiteSnapshot, wait: Histogram | null, hold: Histogram | null): void {
    this.acq += s.acq;
    this.cont += s.cont;
    this.bounces += s.bounces;
    this.conBounces += s.conBounces;
    if (s.cont > 0) {
      this.waitMin = Math.min(this.waitMin, s.waitMin);
      this.waitMax = Math.max(this.waitMax, s.waitMax);
      this.waitTotal += s.waitTotal;
    }
    if (s.holdTimed > 0) {
      this.holdMin = Math.min(this.holdMin, s.holdMin);
      this.holdMax = Math.max(this.holdMax, s.holdMax);
      this.holdTotal += s.holdTotal;
      this.holdTimed += s.holdTimed;
    }
    if (wait !== null) (this.wait ??= newHistogram()).add(wait);
    if (hold !== null) (this.hold ??= newHistogram()).add(hold);
  }

  waitStats(): TimeStats {
    return timeStats(this.cont, this.waitMin, this.waitMax, this.waitTotal, this.cont, this.wait);
  }
  holdStats(): TimeStats {
    return timeStats(this.holdTimed, this.holdMin, this.holdMax, this.holdTotal, this.acq, this.hold);
  }
}

/** min/max/total exact; avg = total / n; percentiles from the histogram, clamped to [min, max]. */
function timeStats(timed: number, min: number, max: number, total: number, n: number, h: Histogram | null): TimeStats {
  if (timed === 0 || n === 0) return { ...ZERO };
  const pct = (p: number): number => (h === null ? 0 : Math.min(max, Math.max(min, h.getValueAtPercentile(p))));
  return { min, max, total, avg: total / n, p50: pct(50), p99: pct(99) };
}

function emptySide(): LockSideTotals {
  return { acquisitions: 0, contentions: 0, bounces: 0, conBounces: 0, waitNs: { ...ZERO }, holdNs: { ...ZERO } };
}

export function emptyLockReport(kind: string): LockReport {
  return {
    kind,
    enabled: false,
    holdSampleEvery: 0,
    acquisitions: 0,
    contentions: 0,
    bounces: 0,
    conBounces: 0,
    waitNs: { ...ZERO },
    holdNs: { ...ZERO },
    sites: [],
    sides: { write: emptySide(), read: emptySide() },
  };
}

function sideTotals(a: Acc): LockSideTotals {
  return { acquisitions: a.acq, contentions: a.cont, bounces: a.bounces, conBounces: a.conBounces, waitNs: a.waitStats(), holdNs: a.holdStats() };
}

/**
 * Merge per-thread snapshots into the report's `lock` field: one row per
 * call site and side that was used (the write rows in LOCK_SITE_NAMES
 * order, then the read rows), the totals of each side, and the lock's
 * totals over every row (histograms merged, not averaged).
 */
export function mergeLockStats(kind: string, snaps: LockStatsSnapshot[]): LockReport {
  const r = emptyLockReport(kind);
  r.enabled = true;
  r.holdSampleEvery = snaps.length ? Math.max(...snaps.map((s) => s.holdSampleEvery)) : 0;
  const all = new Acc();
  const bySide = { write: new Acc(), read: new Acc() };
  for (let i = 0; i < LOCK_ROWS; i++) {
    const side: LockSide = i < READ_ROW ? 'write' : 'read';
    const row = new Acc();
    for (const snap of snaps) {
      const s = snap.sites[i];
      if (!s || s.acq === 0) continue;
      const wait = s.wait !== null ? decode(s.wait) : null;
      const hold = s.hold !== null ? decode(s.hold) : null;
      row.add(s, wait, hold);
      all.add(s, wait, hold);
      bySide[side].add(s, wait, hold);
    }
    if (row.acq === 0) continue;
    r.sites.push({
      site: LOCK_SITE_NAMES[i % READ_ROW],
      side,
      acquisitions: row.acq,
      contentions: row.cont,
      bounces: row.bounces,
      conBounces: row.conBounces,
      waitNs: row.waitStats(),
      holdNs: row.holdStats(),
      holdTimed: row.holdTimed,
    });
  }
  r.acquisitions = all.acq;
  r.contentions = all.cont;
  r.bounces = all.bounces;
  r.conBounces = all.conBounces;
  r.waitNs = all.waitStats();
  r.holdNs = all.holdStats();
  r.sides = { write: sideTotals(bySide.write), read: sideTotals(bySide.read) };
  return r;
}

/** Lock statistics of one line of a lock_stat table. */
export interface LockTableStats {
  conBounces: number;
  contentions: number;
  waitNs: TimeStats;
  bounces: number;
  acquisitions: number;
  holdNs: TimeStats;
}

/**
 * The lines of a lock_stat table, named: the class line `mmu_lock`, then a
 * line per call site. An rwlock's table (or any report with read rows)
 * has, as /proc/lock_stat, a class line per side, `mmu_lock-W` and
 * `mmu_lock-R` (a side without acquisitions is left out), each followed by
 * its sites, `fault (W)`, `fault (R)`. A spinlock's table is as it always
 * was: `mmu_lock` and its sites.
 */
export function lockTableLines(r: LockReport): { name: string; stats: LockTableStats }[] {
  const sideOf = (s: LockSiteReport): LockSide => s.side ?? 'write';
  const sided = r.kind === 'rwlock' || r.sites.some((s) => sideOf(s) === 'read');
  const out = [{ name: 'mmu_lock', stats: r as LockTableStats }];
  if (!sided) return [...out, ...r.sites.map((s) => ({ name: `  ${s.site}`, stats: s as LockTableStats }))];
  for (const [side, tag] of [['write', 'W'], ['read', 'R']] as const) {
    const rows = r.sites.filter((s) => sideOf(s) === side);
    if (rows.length === 0) continue;
    const totals = r.sides?.[side];
    if (totals) out.push({ name: `mmu_lock-${tag}`, stats: totals });
    for (const s of rows) out.push({ name: `  ${s.site} (${tag})`, stats: s });
  }
  return out;
}

/** Microseconds with two decimals, as /proc/lock_stat prints them. */
function us(ns: number): string {
  return (ns / 1000).toFixed(2);
}

/**
 * A /proc/lock_stat-style table: the lock's class line, then one line per
 * call site. Columns as lock_stat (times in microseconds), plus p99s.
 */
export function formatLockTable(r: LockReport): string {
  if (!r.enabled) return `mmu_lock (${r.kind}): lock statistics off (--no-lock-stats)`;
  const head = [
    'class name',
    'con-bounces',
    'contentions',
    'waittime-min',
    'waittime-max',
    'waittime-total',
    'waittime-avg',
    'waittime-p99',
    'acq-bounces',
    'acquisitions',
    'holdtime-min',
    'holdtime-max',
    'holdtime-total',
    'holdtime-avg',
    'holdtime-p99',
  ];
  const row = (name: string, x: LockTableStats): string[] => [
    name,
    `${x.conBounces}`,
    `${x.contentions}`,
    us(x.waitNs.min),
    us(x.waitNs.max),
    us(x.waitNs.total),
    us(x.waitNs.avg),
    us(x.waitNs.p99),
    `${x.bounces}`,
    `${x.acquisitions}`,
    us(x.holdNs.min),
    us(x.holdNs.max),
    us(x.holdNs.total),
    us(x.holdNs.avg),
    us(x.holdNs.p99),
  ];
  const rows = lockTableLines(r).map((l) => row(l.name, l.stats));
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((x) => x[i].length)));
  const fmt = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  const sampling =
    r.holdSampleEvery > 1
      ? `; holdtimes: each site's first ${EXACT_FIRST_HOLDS} acquisitions per thread, then 1 in ${r.holdSampleEvery} (weighted: totals and avgs are estimates; --lock-hold-sample 1 times every hold)`
      : '';
  return [`mmu_lock (${r.kind}) lock_stat, times in us${sampling}:`, fmt(head), ...rows.map(fmt)].join('\n');
}
