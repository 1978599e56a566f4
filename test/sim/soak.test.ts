/**
 * The sim soak (`npm run soak:sim`, not part of the test suite itself):
 * its seeds cover every scenario, backing and strategy, every configuration
 * it makes is valid, and it fails when a run fails.
 */
import { describe, expect, it } from 'vitest';
import { SOAK_BACKINGS, SOAK_SCHEDS, main, soakArgs } from '../../stress/soak.js';
import { SCENARIOS } from '../../stress/scenarios.js';
import { parseRunArgs } from '../../stress/options.js';

describe('soak:sim', () => {
  it('every scenarios x backings x strategies consecutive seeds cover each scenario x backing x strategy once, with valid configurations', () => {
    const seen = new Set<string>();
    const n = SCENARIOS.length * SOAK_BACKINGS.length * SOAK_SCHEDS.length;
    for (let seed = 100_001; seed < 100_001 + n; seed++) {
      const o = parseRunArgs(soakArgs(seed, 8000));
      expect(o.mode).toBe('sim');
      expect(o.profile).toBe('fixed');
      expect(o.bugs).toEqual([]);
      seen.add(`${o.scenario}/${o.backing}/${o.sched}`);
    }
    expect(seen.size).toBe(SCENARIOS.length * SOAK_BACKINGS.length * SOAK_SCHEDS.length);
  });

  it('passes a few seeds of fixed with a one-line summary, and fails (exit 1, the rerun command printed) when a defect is injected', async () => {
    const out: string[] = [];
    const err: string[] = [];
    const io = { out: (s: string) => out.push(s), err: (s: string) => err.push(s) };
    expect(await main(['--seeds', '3', '--first-seed', '300001', '--ops', '1000'], io)).toBe(0);
    expect(out).toHaveLength(1);
    expect(out[0]).toMatch(/^soak:sim PASS: 3 seeds \(300001\.\.300003\), 3 clean, 0 failed/);

    // Seeds 300007 and 300008 are the migrate and cancel scenarios.
    out.length = 0;
    expect(await main(['--seeds', '2', '--first-seed', '300007', '--ops', '3000', '--bug', 'valid-pte-ref-leak'], io)).toBe(1);
    expect(out[0]).toMatch(/^soak:sim FAIL: 2 seeds/);
    expect(err.join('\n')).toMatch(/FAIL seed \d+: .*\n {2}rerun: s2stress run .*--bug valid-pte-ref-leak/);
  }, 900_000);
});
