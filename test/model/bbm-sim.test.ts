/**
 * The live break-before-make check stays silent on every profile's own
 * sequences over whole sim runs: the only reports it makes on v14, 4.0 and
 * 4.7 are the block written over a PTE table (the defect 5.1 fixed: a table
 * replaced by a block without a break before 4.7, stale stage-2-only 4 KiB
 * entries beside the block after), and on `fixed` none at all. Fixed seeds;
 * the failing one is printed with its rerun command.
 */
import { describe, it, expect } from 'vitest';
import { parseRunArgs } from '../../stress/options.js';
import { runSim } from '../../stress/simrun.js';

const SEEDS = [1, 2];
/** fixed on both seeds; the older profiles, whose runs end at their first report, on the first. */
const seedsOf = (profile: string): number[] => (profile === 'fixed' ? SEEDS : SEEDS.slice(0, 1));
const SCENARIOS = ['mixed', 'migrate', 'notifier-storm'];
const BLOCK_OVER_TABLE_HAZARD = /the PMD entry for gfn \d+\.\.\d+ went from table#\d+ to block frame \d+ r[ow] without break-before-make/;
const BLOCK_OVER_TABLE_STALE = /TLB holds page frame \d+ r[ow] for gfn \d+, but the tables hold block frame \d+ r[ow] at the PMD: TLB conflict/;

describe('break-before-make over sim runs', () => {
  for (const profile of ['v14', '4.0', '4.7', 'fixed'] as const) {
    it(`${profile}: silent except for the block written over a PTE table (scenarios ${SCENARIOS.join(', ')}, seeds ${seedsOf(profile).join(', ')})`, async () => {
      for (const scenario of SCENARIOS) {
        for (const seed of seedsOf(profile)) {
          const o = parseRunArgs(['--mode', 'sim', '--profile', profile, '--scenario', scenario, '--vcpus', '2', '--guest-mem', '8M', '--ops', '20000', '--seed', String(seed)]);
          o.quiet = true;
          const r = await runSim(o);
          const where = `seed ${seed}, ${scenario}: ${r.violations.map((v) => `[${v.invariant}] ${v.message}`).join(' | ')}\n  rerun: ${r.replay}`;
          expect(r.error, where).toBeNull();
          for (const v of r.violations.filter((x) => x.invariant === 'break-before-make')) {
            const known = profile === '4.7' ? BLOCK_OVER_TABLE_STALE.test(v.message) : BLOCK_OVER_TABLE_HAZARD.test(v.message) || BLOCK_OVER_TABLE_STALE.test(v.message);
            expect(known && profile !== 'fixed', where).toBe(true);
          }
          if (profile === 'fixed') expect(r.result, where).toBe('pass');
        }
      }
    }, 300_000);
  }
});
