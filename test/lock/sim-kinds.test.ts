/**
 * The spinlock kinds under every scenario and profile, sim mode (one actor at
 * a time under the seeded random strategy): each run ends without a harness
 * failure and without a `lock-held` or `progress` violation (a deadlock is
 * detected exactly in sim mode), its lock_stat rows add up, and over all the
 * runs of a kind the contended path was taken (an actor preempted while
 * holding mmu_lock, another blocked on it). Other invariants belong to the
 * model (v14 and v15 have known defects). The rwlock has its own, shorter
 * matrix in rwlock-sim.test.ts (this one costs ~15 s of test time per
 * kind). Needs `npm run build`.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import type { LockKind } from '../../src/config.js';
import { SCENARIOS } from '../../stress/scenarios.js';
import { defaultOptions } from '../../stress/options.js';
import { runSim } from '../../stress/simrun.js';
import { LOCK_TEST_PROFILES as PROFILES, expectLockCorrect, requireBuild } from './support.js';

const SEED = 21;

const SPINLOCK_KINDS: LockKind[] = ['ticket', 'tas'];

for (const lock of SPINLOCK_KINDS) {
  describe(`--lock ${lock}: correct under every scenario and profile (sim mode, seed ${SEED})`, () => {
    beforeAll(requireBuild);
    let contentions = 0;
    let runs = 0;
    for (const s of SCENARIOS) {
      for (const profile of PROFILES) {
        it(`${s.name}, ${profile}`, async () => {
          const o = { ...defaultOptions(), mode: 'sim' as const, scenario: s.name, profile, lock, vcpus: 2, guestMem: 8 * 1024 * 1024, ops: 2500, seed: SEED, quiet: true };
          const r = await runSim(o);
          expectLockCorrect(r, lock, SEED);
          contentions += r.lock.contentions;
          runs++;
        });
      }
    }
    // Tests of a file run in order: this one sees the runs above.
    it('took the contended path in some run', () => {
      expect(runs, 'every scenario x profile run above ran').toBe(SCENARIOS.length * PROFILES.length);
      expect(contentions, `${lock}: contended acquisitions over ${runs} sim runs (seed ${SEED})`).toBeGreaterThan(0);
    });
  });
}
