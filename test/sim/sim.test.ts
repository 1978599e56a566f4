/**
 * Deterministic mode: same seed and configuration, the same run bit for bit;
 * defects found within a fixed set of seeds and replayed exactly; the fixed
 * profile clean over hundreds of seeds; deadlocks reported deterministically.
 */
import { describe, expect, it } from 'vitest';
import { firstFailure, run, why } from '../harness/util.js';
import type { Report } from '../../stress/report.js';

const SMALL = ['--mode', 'sim', '--guest-mem', '8M', '--vcpus', '2'];

function fingerprint(r: Report): unknown {
  return { schedule: r.schedule, counters: r.counters, violations: r.violations, migration: r.migration, result: r.result };
}

describe('sim mode', () => {
  const configs: string[][] = [
    ['--scenario', 'mixed', '--profile', 'fixed', '--sched', 'random', '--ops', '20000', '--seed', '11'],
    ['--scenario', 'cancel', '--profile', 'v15', '--sched', 'pct', '--ops', '20000', '--seed', '12'],
    ['--scenario', 'notifier-storm', '--profile', 'fixed', '--sched', 'pct', '--pct-depth', '5', '--ops', '20000', '--seed', '13'],
    ['--scenario', 'selftest-dirty-log', '--profile', 'v14', '--sched', 'random', '--ops', '30000', '--seed', '14'],
    ['--scenario', 'migrate', '--profile', 'v14', '--lock', 'tas', '--ops', '20000', '--seed', '15'],
  ];
  for (const c of configs) {
    it(`same seed and configuration give the same run bit for bit: ${c.join(' ')}`, async () => {
      const a = await run([...SMALL, ...c]);
      const b = await run([...SMALL, ...c]);
      expect(a.error, why(a)).toBeNull();
      expect(a.schedule!.steps).toBeGreaterThan(1000);
      expect(fingerprint(b)).toEqual(fingerprint(a));
    });
  }

  it('a different seed gives a different schedule', async () => {
    const a = await run([...SMALL, '--ops', '5000', '--seed', '1']);
    const b = await run([...SMALL, '--ops', '5000', '--seed', '2']);
    expect(a.schedule!.hash).not.toBe(b.schedule!.hash);
  });

  // `migrate` has no cancels, so what is found is the read-fault defect
  // (writable without dirty), not v14's other one (block over table).
  it('v14 is found by the default strategy within seeds 1..8, and the failing seed replays to the same violation', async () => {
    const { report, tried } = await firstFailure([...SMALL, '--profile', 'v14', '--scenario', 'migrate', '--ops', '40000'], [1, 2, 3, 4, 5, 6, 7, 8]);
    expect(report, `v14 not found in ${tried} seeds`).not.toBeNull();
    expect(report!.violations.map((v) => v.invariant), why(report!)).toContain('migration-equal');
    const again = await run([...SMALL, '--profile', 'v14', '--scenario', 'migrate', '--ops', '40000', '--seed', String(report!.config.seed)]);
    expect(again.schedule).toEqual(report!.schedule);
    expect(again.violations).toEqual(report!.violations);
    console.log(`v14 sim: found with seed ${report!.config.seed} (${tried} tried), ${Math.round(report!.elapsedMs)} ms, hash ${report!.schedule!.hash}`);
  });

  it('v15 is found by the default strategy within seeds 1..8, and the failing seed replays to the same violation', async () => {
    const { report, tried } = await firstFailure([...SMALL, '--profile', 'v15', '--scenario', 'cancel', '--ops', '40000'], [1, 2, 3, 4, 5, 6, 7, 8]);
    expect(report, `v15 not found in ${tried} seeds`).not.toBeNull();
    const invs = report!.violations.map((v) => v.invariant);
    expect(invs.some((i) => i === 'table-conservation' || i === 'tlb-coherent'), why(report!)).toBe(true);
    const again = await run([...SMALL, '--profile', 'v15', '--scenario', 'cancel', '--ops', '40000', '--seed', String(report!.config.seed)]);
    expect(again.schedule).toEqual(report!.schedule);
    expect(again.violations).toEqual(report!.violations);
    console.log(`v15 sim: found with seed ${report!.config.seed} (${tried} tried), ${Math.round(report!.elapsedMs)} ms, hash ${report!.schedule!.hash}`);
  });

  it('PCT, the strategy that switches only at change points and on blocking, finds v14 and v15 too (seeds 1..3)', async () => {
    for (const [profile, scenario, accepted] of [
      ['v14', 'migrate', ['migration-equal']],
      ['v15', 'cancel', ['table-conservation', 'tlb-coherent']],
    ] as const) {
      const { report, tried } = await firstFailure([...SMALL, '--sched', 'pct', '--profile', profile, '--scenario', scenario, '--ops', '40000'], [1, 2, 3]);
      expect(report, `${profile} not found by pct in ${tried} seeds`).not.toBeNull();
      expect(report!.violations.some((v) => (accepted as readonly string[]).includes(v.invariant)), why(report!)).toBe(true);
    }
  });

  it('a deadlock is reported deterministically, naming who holds and who waits', async () => {
    const args = [...SMALL, '--bug', 'gup-under-mmu-lock', '--scenario', 'notifier-storm', '--ops', '30000', '--seed', '1'];
    const a = await run(args);
    const b = await run(args);
    expect(a.violations[0]?.invariant, why(a)).toBe('progress');
    expect(a.violations[0].message).toMatch(/deadlock at step \d+: every actor is blocked; mmu_lock held by vcpu\d/);
    // get_user_pages() under mmu_lock: the host fault it makes waits for a
    // host PTE lock, or its notifier spins on the mmu_lock its own vCPU holds.
    expect(a.violations[0].message).toMatch(/waiting on the host PTE of gfn \d+|spinning on mmu_lock \(held by (vcpu\d) at fault\)/);
    expect(a.exitCode).toBe(1);
    expect(b.violations).toEqual(a.violations);
    expect(b.schedule).toEqual(a.schedule);
  });

  it('fixed passes 10 sim seeds across scenarios and both strategies (npm run soak:sim runs 2000)', async () => {
    const scenarios = ['mixed', 'migrate', 'cancel', 'notifier-storm', 'selftest-dirty-log'];
    let runs = 0;
    for (let seed = 1; seed <= 2; seed++) {
      for (const scenario of scenarios) {
        const sched = seed % 2 === 0 ? 'pct' : 'random';
        // A migration takes more accesses than the other scenarios' work (under
        // PCT, seed 16 completes none in 2000: the run then says "ran no work").
        const ops = scenario === 'migrate' ? '4000' : '2000';
        const r = await run([...SMALL, '--scenario', scenario, '--sched', sched, '--ops', ops, '--seed', String(seed)]);
        expect(r.result, why(r)).toBe('pass');
        runs++;
      }
    }
    expect(runs).toBe(10);
  }, 600_000);
});
