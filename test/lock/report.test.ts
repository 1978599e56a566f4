/**
 * The lock_stat table and the report's `lock` field (docs/design.md section 5),
 * from constructed statistics and from short threads-mode runs with
 * statistics on and off. Threads-mode runs need `npm run build`.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { LockStats, emptyLockReport, formatLockTable, mergeLockStats, type LockReport } from '../../src/sync/lockstat.js';
import { LOCK_SITE_NAMES, LS } from '../../src/sync/locksites.js';
import { runThreads } from '../../stress/run.js';
import { defaultOptions, type RunOptions } from '../../stress/options.js';
import { requireBuild } from './support.js';

const TIME_KEYS = ['min', 'max', 'total', 'avg', 'p50', 'p99'];
const LOCK_STAT_COLUMNS = [
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

function expectLockShape(l: LockReport): void {
  for (const k of ['acquisitions', 'contentions', 'bounces', 'conBounces', 'waitNs', 'holdNs', 'sites', 'kind', 'enabled', 'holdSampleEvery']) expect(l).toHaveProperty(k);
  expect(Object.keys(l.waitNs).sort()).toEqual([...TIME_KEYS].sort());
  expect(Object.keys(l.holdNs).sort()).toEqual([...TIME_KEYS].sort());
  for (const s of l.sites) {
    expect(LOCK_SITE_NAMES).toContain(s.site);
    expect(Object.keys(s.waitNs).sort()).toEqual([...TIME_KEYS].sort());
    expect(Object.keys(s.holdNs).sort()).toEqual([...TIME_KEYS].sort());
    expect(s.acquisitions).toBeGreaterThan(0);
    expect(s.contentions).toBeLessThanOrEqual(s.acquisitions);
    expect(s.conBounces).toBeLessThanOrEqual(s.contentions);
  }
  // rows add up to the lock's totals
  expect(l.sites.reduce((x, s) => x + s.acquisitions, 0)).toBe(l.acquisitions);
  expect(l.sites.reduce((x, s) => x + s.contentions, 0)).toBe(l.contentions);
  // JSON round trip keeps it all (no Infinity, no NaN)
  expect(JSON.parse(JSON.stringify(l))).toEqual(l);
}

describe('lock_stat table', () => {
  it('has the /proc/lock_stat columns plus p99s, a class line and one line per used site, times in us', () => {
    const st = new LockStats(1);
    for (const [site, wait, hold] of [
      [LS.fault, -1, 1500],
      [LS.fault, 2500, 800],
      [LS.harvest, -1, 12_000],
    ] as const) {
      st.acquired(site, wait >= 0, false);
      st.timed(site, wait, hold, 1);
    }
    const r = mergeLockStats('ticket', [st.snapshot()]);
    const lines = formatLockTable(r).split('\n');
    expect(lines[0]).toMatch(/^mmu_lock \(ticket\) lock_stat, times in us/);
    expect(lines[1].trim().split(/\s{2,}/)).toEqual(LOCK_STAT_COLUMNS);
    const rows = lines.slice(2).map((l) => l.trim().split(/\s{2,}/));
    expect(rows.map((x) => x[0])).toEqual(['mmu_lock', 'fault', 'harvest']);
    // fault: 0 con-bounces, 1 contention, wait 2.50us (min=max=total=avg=p99), 2 acquisitions, holds 0.80 / 1.50us
    expect(rows[1]).toEqual(['fault', '0', '1', '2.50', '2.50', '2.50', '2.50', '2.50', '0', '2', '0.80', '1.50', '2.30', '1.15', '1.50']);
    expect(rows[2].slice(8)).toEqual(['0', '1', '12.00', '12.00', '12.00', '12.00', '12.00']);
    expectLockShape(r);
  });

  it('says plainly when statistics were off', () => {
    expect(formatLockTable(emptyLockReport('tas'))).toMatch(/statistics off/);
  });
});

describe('threads mode: the report carries lock_stat under `lock`', () => {
  beforeAll(requireBuild);
  const base: RunOptions = {
    ...defaultOptions(),
    scenario: 'mixed',
    vcpus: 2,
    guestMem: 16 * 1024 * 1024,
    durationMs: 600,
    seed: 11,
    quiet: true,
  };

  it('statistics on: per-site rows that add up, lock_stat JSON shape', async () => {
    const r = await runThreads({ ...base, lockStats: true });
    expect(r.error, `seed ${base.seed}`).toBe(null);
    expect(r.lock.enabled).toBe(true);
    expect(r.lock.acquisitions).toBeGreaterThan(0);
    expect(r.lock.sites.map((s) => s.site)).toContain('fault');
    // the `check` site: the orchestrator's stop-the-world checks (one each) and the migrator's check when logging-on returns (one per enable)
    const check = r.lock.sites.find((s) => s.site === 'check');
    const counters = r.counters as unknown as Record<string, number>;
    expect(check, `seed ${base.seed}`).toBeDefined();
    expect(r.quiescentChecks, `seed ${base.seed}`).toBeGreaterThan(0);
    expect(counters.loggingOn, `seed ${base.seed}`).toBeGreaterThan(0);
    expect(check!.acquisitions, `seed ${base.seed}`).toBe(r.quiescentChecks + counters.loggingOn);
    expect(check!.holdNs.min, `seed ${base.seed}`).toBeGreaterThan(0);
    expectLockShape(r.lock);
  });

  it('statistics off (--no-lock-stats): no lock data at all', async () => {
    const r = await runThreads({ ...base, lockStats: false });
    expect(r.error, `seed ${base.seed}`).toBe(null);
    expect(r.lock).toEqual(emptyLockReport(base.lock));
    expect(r.lock.enabled).toBe(false);
    expect(r.counters.faults).toBeGreaterThan(0); // the run itself ran
  });
});
