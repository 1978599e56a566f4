/**
 * `s2stress bench --quick`: every section runs, the output names the
 * targets, and the JSON carries the ratios, the scaling table and the
 * machine. Figures are not checked (benchmarks, not timed tests). Needs
 * `npm run build` (the threads-mode sections load dist/workers/actor.js).
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../stress/cli.js';
import { requireBuild } from './support.js';
import { bootstrapMedianCi } from '../../bench/scaling.js';
import { median } from '../../bench/micro.js';
import { XorShift32 } from '../../src/sync/sched.js';

describe('s2stress bench --quick', () => {
  beforeAll(requireBuild);

  it('runs every section and writes the results as JSON', async () => {
    const json = join(mkdtempSync(join(tmpdir(), 's2bench-')), 'bench.json');
    const out: string[] = [];
    const err: string[] = [];
    // The spinlocks' scaling points only (the rwlock's would add ~10 s; its threads-mode runs are tested in rwlock.test.ts).
    const code = await main(['bench', '--quick', '--vcpus', '1,2', '--duration', '300ms', '--overhead-vcpus', '2', '--lock', 'ticket,tas', '--seed', '3', '--json', json], {
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
