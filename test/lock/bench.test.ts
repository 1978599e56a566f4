/**
 * `s2stress bench --quick`: every section runs, the output names the
 * targets, and the JSON carries the ratios, the scaling table and the
 * machine. Figures are not checked (benchmarks, not timed tests). Needs
 * `npm run build` (the threads-mode sections load dist/workers/actor.js).
 * The dirty-log section (dirty_log_perf_test, old profile against 6.2) has
 * a test of its own, with the checks of dirtyLogProblems().
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../stress/cli.js';
import { requireBuild } from './support.js';
import { bootstrapMedianCi } from '../../bench/scaling.js';
import { median } from '../../bench/micro.js';
import { XorShift32 } from '../../src/sync/sched.js';

/** --quick's vCPU counts (each point starts its workers: ~0.5 s each on a loaded 2-core machine). */
const DIRTY_LOG_VCPUS = [1, 2];

interface Point {
  side: string;
  profile: string;
  lock: string;
  vcpus: number;
  result: string;
  error: string | null;
  perf: { iterations: number; dirtyMsPerIteration: number; faultsPerSec: number; faults: number } | null;
  faultLock: { acquisitions: number; readAcquisitions: number; waitNsPerFault: number; waitedShare: number };
  counters: { faults: number; readSideFaults: number };
}

/**
 * What is wrong with a dirty-log section (JSON) that should hold `old`
 * against `new` at `vcpus`: every point there and passed, its figures
 * finite (times and rates positive), the new profile's faults on the read
 * side of mmu_lock and the old one's not. Empty when all is well.
 */
function dirtyLogProblems(d: { profiles: { old: { profile: string }; new: { profile: string } }; points: Point[]; rows: { vcpus: number; oldMs: number; newMs: number; ratio: number; upstream: { oldS: number; newS: number } | null }[] }, old: string, neu: string, vcpus: number[]): string[] {
  const bad: string[] = [];
  const pos = (x: unknown): boolean => typeof x === 'number' && Number.isFinite(x) && x > 0;
  const fin = (x: unknown): boolean => typeof x === 'number' && Number.isFinite(x) && x >= 0;
  if (d.profiles.old.profile !== old || d.profiles.new.profile !== neu) bad.push(`profiles ${d.profiles.old.profile},${d.profiles.new.profile}, expected ${old},${neu}`);
  for (const side of ['old', 'new'] as const) {
    for (const v of vcpus) {
      const p = d.points.find((x) => x.side === side && x.vcpus === v);
      const at = `${side} side, ${v} vCPU(s)`;
      if (!p) {
        bad.push(`${at}: no point`);
        continue;
      }
      if (p.result !== 'pass') bad.push(`${at}: ${p.result} ${p.error ?? ''}`);
      if (!p.perf || !(p.perf.iterations > 0)) bad.push(`${at}: no measured iteration`);
      else if (!pos(p.perf.dirtyMsPerIteration) || !pos(p.perf.faultsPerSec) || !pos(p.perf.faults)) bad.push(`${at}: dirty time ${p.perf.dirtyMsPerIteration}, faults/s ${p.perf.faultsPerSec}`);
      if (!pos(p.faultLock.acquisitions) || !fin(p.faultLock.waitNsPerFault) || !fin(p.faultLock.waitedShare) || p.faultLock.waitedShare > 1) {
        bad.push(`${at}: fault lock figures ${JSON.stringify(p.faultLock)}`);
      }
      if (side === 'new' && !(p.counters.readSideFaults > 0 && p.faultLock.readAcquisitions > 0)) bad.push(`${at}: ${p.profile} faults took no read side (readSideFaults ${p.counters.readSideFaults})`);
      if (side === 'old' && (p.counters.readSideFaults !== 0 || p.faultLock.readAcquisitions !== 0)) bad.push(`${at}: ${p.profile} faults took the read side (readSideFaults ${p.counters.readSideFaults})`);
    }
  }
  for (const v of vcpus) {
    const row = d.rows.find((r) => r.vcpus === v);
    if (!row || !pos(row.oldMs) || !pos(row.newMs) || !pos(row.ratio)) bad.push(`row of ${v} vCPU(s): ${JSON.stringify(row)}`);
  }
  return bad;
}

describe('s2stress bench --quick', () => {
  beforeAll(requireBuild);

  it('runs every section and writes the results as JSON', async () => {
    const json = join(mkdtempSync(join(tmpdir(), 's2bench-')), 'bench.json');
    const out: string[] = [];
    const err: string[] = [];
    // The spinlocks' scaling points only (the rwlock's would add ~10 s; its threads-mode runs are tested in rwlock.test.ts).
    // Every section but dirty-log (tested below).
    const html = join(dirname(json), 'bench.html');
    const code = await main(['bench', '--quick', '--only', 'lock,tlb,fault,scaling,overhead,sim', '--vcpus', '1,2', '--duration', '300ms', '--overhead-vcpus', '2', '--lock', 'ticket,tas', '--seed', '3', '--json', json, '--html', html], {
      out: (s) => out.push(s),
      err: (s) => err.push(s),
    });
    expect(code, err.join('\n')).toBe(0);
    const text = out.join('\n');
    for (const heading of ['mmu_lock acquire+release', 'TLB-hit guest access', '4 KiB fault path', 'Scaling', 'Lock statistics cost', 'Targets']) {
      expect(text).toContain(heading);
    }
    expect(text).toMatch(/2 core|\d+ core/);
    const r = JSON.parse(readFileSync(json, 'utf8'));
    expect(Object.keys(r.machine).sort()).toEqual(['cpuModel', 'date', 'loadavgEnd', 'loadavgStart', 'node', 'nproc', 'platform']);
    expect(r.lock.rows.find((x: { name: string }) => x.name.startsWith('ticket, statistics on')).ratio).toBeGreaterThan(0);
    // the rwlock's two sides, side by side with the spinlocks
    for (const side of ['write', 'read']) {
      expect(r.lock.rows.filter((x: { name: string; ratio: number }) => x.name.startsWith(`rwlock ${side}, `) && x.ratio > 0), side).toHaveLength(3);
    }
    expect(r.tlb.rows.filter((x: { ratio: number | null }) => x.ratio !== null)).toHaveLength(2);
    expect(r.fault.rows.every((x: { faultsPerSec: number }) => x.faultsPerSec > 0)).toBe(true);
    expect(r.scaling.points.map((p: { lock: string; vcpus: number }) => `${p.lock}/${p.vcpus}`)).toEqual(['ticket/1', 'ticket/2', 'tas/1', 'tas/2']);
    expect(r.scaling.points.every((p: { result: string; contentionRatio: number }) => p.result === 'pass' && p.contentionRatio >= 0)).toBe(true);
    // rates over the steady window of each run (live counters), or the whole run when too short for one
    expect(r.scaling.points.every((p: { accessesPerSec: number; faultsPerSec: number }) => p.accessesPerSec > 0 && p.faultsPerSec >= 0)).toBe(true);
    expect(r.overhead.pairs).toHaveLength(1);
    const [lo, hi] = r.overhead.faultsRatioCi;
    expect(lo <= r.overhead.faultsRatio && r.overhead.faultsRatio <= hi).toBe(true);
    expect(r.targets.length).toBeGreaterThanOrEqual(6);
    // --html: the same results as a page (drawn in Chromium by test/html/browser.test.ts)
    const page = readFileSync(html, 'utf8');
    expect(page).toContain('guest accesses per second by vCPUs');
    expect(page.match(/<polyline class="line"/g)?.length).toBeGreaterThanOrEqual(6);
    // campaign throughput: the default sim configuration (--quick: 5 000 accesses of it), with every thread's CPU time
    const sr = r.sim.seedRate;
    expect(sr.seeds).toEqual([3]);
    expect(sr.config).toEqual({ scenario: 'mixed', vcpus: 4, guestMem: 1 << 30, ops: 5000 });
    expect(sr.cpuMs[0]).toBeGreaterThan(0);
    expect(sr.seedsPerCpuMinute).toBeCloseTo(60_000 / sr.cpuMs[0], 6);
    expect(sr.steps[0]).toBeGreaterThan(sr.switches[0]);
    expect(text).toMatch(/[\d.]+ seeds per CPU-minute/);
    expect(r.sim.rows.find((x: { mode: string }) => x.mode === 'sim random').switchesPerSec).toBeGreaterThan(0);
  });

  it('--html naming a directory is refused before anything runs, naming the flag (exit 2)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 's2bench-'));
    const err: string[] = [];
    const code = await main(['bench', '--quick', '--only', 'sim', '--html', dir], { out: () => {}, err: (s) => err.push(s) });
    expect(code).toBe(2);
    expect(err.join('\n')).toMatch(/--html '.*' cannot be written: it is a directory/);
  });

  it(`dirty-log: dirty_log_perf_test, fixed against 6.2 at ${DIRTY_LOG_VCPUS.join(', ')} vCPUs, with the upstream figures`, async () => {
    const json = join(mkdtempSync(join(tmpdir(), 's2bench-')), 'bench.json');
    const out: string[] = [];
    const err: string[] = [];
    const seed = 5;
    const code = await main(['bench', '--quick', '--only', 'dirty-log', '--seed', String(seed), '--json', json], {
      out: (s) => out.push(s),
      err: (s) => err.push(s),
    });
    expect(code, `seed ${seed}: ${err.join('\n')}`).toBe(0);
    const d = JSON.parse(readFileSync(json, 'utf8')).dirtyLog;
    expect(dirtyLogProblems(d, 'fixed', '6.2', DIRTY_LOG_VCPUS), `seed ${seed}`).toEqual([]);
    const text = out.join('\n');
    expect(text).toContain('dirty_log_perf_test');
    expect(text).toMatch(/dirty ms\/iter fixed +6\.2 +fixed\/6\.2 +faults\/s fixed +6\.2 +wait\/fault ns fixed +6\.2 +faults waited fixed +6\.2 +upstream 6\.1-rc3 s +6\.2 s/);
    // a row per vCPU count, the upstream figures beside 1, the others' right after
    expect(text).toMatch(/^1 +[\d.]+ +[\d.]+ +[\d.]+x .* 0\.87 +0\.93 +0\.94x$/m);
    expect(text).toMatch(/^2 +[\d.]+ +[\d.]+ +[\d.]+x /m);
    expect(text).toMatch(/upstream also: 4 vCPUs 2\.39 -> 1\.27 s \(1\.88x\); 8 vCPUs 5\.01 -> 1\.39 s \(3\.60x\)/);
    expect(text).toMatch(/real parallelism stops at \d+ vCPU/);
    expect(d.profiles).toEqual({ old: { profile: 'fixed', lock: 'ticket' }, new: { profile: '6.2', lock: 'rwlock' } });
    expect(d.rows.find((r: { vcpus: number }) => r.vcpus === 1).upstream).toEqual({ oldS: 0.87, newS: 0.93, ratio: 0.87 / 0.93 });
    expect(d.upstream.points.map((p: { vcpus: number }) => p.vcpus)).toEqual([1, 4, 8, 16, 48]);
    // The checks see a broken result: the new side's points replaced by the old side's (both sides the old profile).
    const both = { ...d, points: d.points.map((p: Point) => (p.side === 'new' ? { ...d.points.find((q: Point) => q.side === 'old' && q.vcpus === p.vcpus), side: 'new' } : p)) };
    expect(dirtyLogProblems(both, 'fixed', '6.2', DIRTY_LOG_VCPUS).filter((x) => x.includes('took no read side'))).toHaveLength(DIRTY_LOG_VCPUS.length);
  });

  it('eager-split: logging on with and without eager splitting, side by side, with ratio columns', async () => {
    const json = join(mkdtempSync(join(tmpdir(), 's2bench-')), 'bench.json');
    const out: string[] = [];
    const err: string[] = [];
    const code = await main(['bench', '--quick', '--only', 'eager-split', '--vcpus', '1', '--seed', '3', '--json', json], {
      out: (s) => out.push(s),
      err: (s) => err.push(s),
    });
    expect(code, err.join('\n')).toBe(0);
    const e = JSON.parse(readFileSync(json, 'utf8')).eagerSplit;
    expect(e.rows).toHaveLength(1);
    const row = e.rows[0];
    expect([row.off.chunk, row.on.chunk]).toEqual([0, 2 * 1024 * 1024]);
    // Off: no eager split, the faults split the blocks; on: the splits happen at logging-on.
    expect(row.off.eagerSplits).toBe(0);
    expect(row.on.eagerSplits).toBeGreaterThan(0);
    expect(row.on.faultSplits).toBe(0);
    expect(row.off.faultSplits).toBeGreaterThan(0);
    expect(row.enableRatio).toBeGreaterThan(0);
    expect(out.join('\n')).toMatch(/logging on ms off +on +on\/off +first-iteration faults off +on +on\/off/);
    expect(out.join('\n')).toMatch(/^1 +[\d.]+ +[\d.]+ +[\d.]+x +\d+ +\d+ +[\d.]+x/m);
  });

  it('--vcpu-mem, --profiles and --passes (dirty-log): bad values are exit code 2, naming the flag', async () => {
    const { parseBenchArgs } = await import('../../bench/run.js');
    expect(parseBenchArgs(['--vcpu-mem', '4M', '--profiles', '5.18,6.2', '--passes', '3'])).toMatchObject({ vcpuMem: 4 * 1024 * 1024, profiles: ['5.18', '6.2'], passes: 3 });
    for (const [args, msg] of [
      [['--vcpu-mem', '3M'], /--vcpu-mem takes guest bytes per vCPU, a multiple of 2M/],
      [['--profiles', 'fixed'], /--profiles takes two profiles, old and new, as OLD,NEW/],
      [['--profiles', 'fixed,6.3'], /--profiles takes two profiles.*got 'fixed,6\.3'/],
      [['--passes', '0'], /--passes/],
      [['--only', 'dirty-log', '--vcpus', '64', '--vcpu-mem', '1G'], /--vcpu-mem 1G x 64 vCPUs is 64G of guest memory; the model takes at most 16G/],
    ] as const) {
      const err: string[] = [];
      const code = await main(['bench', ...args], { out: () => {}, err: (s) => err.push(s) });
      expect(code, args.join(' ')).toBe(2);
      expect(err.join('\n')).toMatch(msg);
    }
  });

  it('bootstrap interval of a median: seeded, around the median, narrower with more pairs', () => {
    const rng = new XorShift32(7);
    const sample = (n: number): number[] => Array.from({ length: n }, () => 0.9 + rng.float() * 0.2);
    const few = sample(8);
    const many = sample(200);
    const [a, b] = bootstrapMedianCi(few);
    expect(bootstrapMedianCi(few)).toEqual([a, b]);
    expect(a <= median(few) && median(few) <= b, `seed 7: [${a}, ${b}]`).toBe(true);
    const [c, d] = bootstrapMedianCi(many);
    expect(d - c, `seed 7: ${d - c} vs ${b - a}`).toBeLessThan(b - a);
    expect(c < 1 && d > 1, `seed 7: the true median 1 in [${c}, ${d}]`).toBe(true);
  });

  it('--lock takes a kind, all, or a comma list of kinds; anything else is exit code 2, naming the flag', async () => {
    const { parseBenchArgs } = await import('../../bench/run.js');
    expect(parseBenchArgs(['--lock', 'rwlock']).locks).toEqual(['rwlock']);
    expect(parseBenchArgs(['--lock', 'tas,rwlock']).locks).toEqual(['tas', 'rwlock']);
    expect(parseBenchArgs([]).locks).toEqual(['ticket', 'tas', 'rwlock']);
    const err: string[] = [];
    const code = await main(['bench', '--lock', 'ticket,mcs'], { out: () => {}, err: (s) => err.push(s) });
    expect(code).toBe(2);
    expect(err.join('\n')).toMatch(/--lock takes one of ticket\|tas\|rwlock\|all or a comma list of kinds, got 'mcs'/);
  });

  it('rejects an unknown flag with exit code 2, naming it', async () => {
    const err: string[] = [];
    const code = await main(['bench', '--frobnicate'], { out: () => {}, err: (s) => err.push(s) });
    expect(code).toBe(2);
    expect(err.join('\n')).toMatch(/--frobnicate/);
  });
});
