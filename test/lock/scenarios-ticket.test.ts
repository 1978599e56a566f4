/**
 * The ticket lock under every scenario and profile, threads mode: see
 * checkLockUnderScenario(). Needs `npm run build` (workers load dist/).
 */
import { beforeAll, describe, it } from 'vitest';
import { SCENARIOS } from '../../stress/scenarios.js';
import { LOCK_TEST_PROFILES as PROFILES, checkLockUnderScenario, requireBuild } from './support.js';

const SEED = 7;

describe('--lock ticket: correct under every scenario and profile (threads mode)', () => {
  beforeAll(requireBuild);
  for (const s of SCENARIOS) {
    for (const profile of PROFILES) {
      it(`${s.name}, ${profile}`, () => checkLockUnderScenario('ticket', s.name, profile, SEED));
    }
  }
});
