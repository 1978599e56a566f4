/**
 * Configuration errors: createVm / validateModelConfig refuse a bad model
 * configuration with a ConfigError whose `setting` is the flag and whose
 * message names what is accepted (exit code 2 at the CLI).
 */
import { describe, it, expect } from 'vitest';
import {
  ConfigError,
  DEFAULT_MODEL,
  MAX_GUEST_MEM,
  MAX_VCPUS,
  MIN_VCPUS,
  type ModelConfig,
  validateModelConfig,
} from '../../src/config.js';
import { createVm } from '../../src/vm.js';
import { BUG_NAMES } from '../../src/profiles.js';
import { computeLayout } from '../../src/shm/layout.js';
import { S2_OA_MAX } from '../../src/arch/stage2.js';
import { HPTE_FRAME_MASK } from '../../src/mm/hostpt.js';
import { MiB } from './support.js';

const GiB = 1024 * MiB;

function cfg(over: Partial<ModelConfig>): ModelConfig {
  return { ...DEFAULT_MODEL, guestMem: 8 * MiB, vcpus: 2, ...over };
}

/** The ConfigError createVm throws for `over` (and validateModelConfig agrees). */
function configError(over: Partial<ModelConfig>): ConfigError {
  let viaValidate: unknown = null;
  try {
    validateModelConfig(cfg(over), BUG_NAMES);
  } catch (e) {
    viaValidate = e;
  }
  let viaCreate: unknown = null;
  try {
    createVm(cfg(over));
  } catch (e) {
    viaCreate = e;
  }
  expect(viaValidate).toBeInstanceOf(ConfigError);
  expect(viaCreate).toBeInstanceOf(ConfigError);
  expect((viaCreate as ConfigError).setting).toBe((viaValidate as ConfigError).setting);
  return viaCreate as ConfigError;
}

describe('configuration errors', () => {
  for (const guestMem of [3 * MiB, 1 * MiB, 2 * MiB + 4096, 64 * MiB + 512 * 1024]) {
    it(`guest memory that is not a multiple of 2 MiB (${guestMem} bytes) is refused on --guest-mem, naming the 2M granule`, () => {
      const e = configError({ guestMem });
      expect(e.setting).toBe('--guest-mem');
      expect(e.message).toMatch(/--guest-mem must be a multiple of 2M/);
    });
  }

  it('zero guest memory is refused on --guest-mem', () => {
    const e = configError({ guestMem: 0 });
    expect(e.setting).toBe('--guest-mem');
    expect(e.message).toMatch(/positive size/);
  });

  for (const guestMem of [MAX_GUEST_MEM + 2 * MiB, 32 * GiB, 2 ** 52]) {
    it(`guest memory beyond what the layout can address (${guestMem / GiB} GiB) is refused on --guest-mem, naming the range 2M..16G`, () => {
      const e = configError({ guestMem });
      expect(e.setting).toBe('--guest-mem');
      expect(e.message).toMatch(/from 2M to 16G/);
    });
  }

  for (const vcpus of [0, -1, MAX_VCPUS + 1, 1.5, Number.NaN]) {
    it(`${vcpus} vCPUs is refused on --vcpus, naming the range ${MIN_VCPUS} to ${MAX_VCPUS}`, () => {
      const e = configError({ vcpus });
      expect(e.setting).toBe('--vcpus');
      expect(e.message).toMatch(new RegExp(`from ${MIN_VCPUS} to ${MAX_VCPUS}`));
    });
  }

  it('an unknown backing, profile, lock or bug, or a bad TLB size or lock sampling, is refused on its own setting, naming what is accepted', () => {
    const cases: Array<[Partial<ModelConfig>, string, RegExp]> = [
      [{ backing: 'shmem' as ModelConfig['backing'] }, '--backing', /anon\|thp\|hugetlb\|mixed/],
      [{ profile: 'v16' as ModelConfig['profile'] }, '--profile', /v14\|4\.0\|.*\|v15\|fixed/],
      [{ arch: 'armv8' as ModelConfig['arch'] }, '--arch', /armv7\|arm64/],
      [{ lock: 'mcs' as ModelConfig['lock'] }, '--lock', /ticket\|tas/],
      [{ bugs: ['no-such-bug'] }, '--bug', /no-tlbi-on-dissolve/],
      [{ tlbPageSlots: 100 }, 'tlbPageSlots', /power of two/],
      [{ tlbBlockSlots: 0 }, 'tlbBlockSlots', /power of two/],
      [{ lockHoldSample: 3 }, '--lock-hold-sample', /power of two from 1 to 65536/],
    ];
    for (const [over, setting, accepted] of cases) {
      const e = configError(over);
      expect([e.setting, accepted.test(e.message)]).toEqual([setting, true]);
    }
  });

  it('the boundaries are accepted: 1 and 64 vCPUs, 2 MiB and 16 GiB of guest memory', () => {
    expect(createVm(cfg({ vcpus: MIN_VCPUS, guestMem: 2 * MiB })).layout.vcpus).toBe(1);
    expect(createVm(cfg({ vcpus: MAX_VCPUS, guestMem: 2 * MiB })).layout.vcpus).toBe(64);
    expect(() => validateModelConfig(cfg({ guestMem: MAX_GUEST_MEM, vcpus: MAX_VCPUS, backing: 'mixed' }), BUG_NAMES)).not.toThrow();
  });

  it('the largest accepted configuration is addressable: frame numbers and table indices fit the descriptor output field and the host PTE', () => {
    const L = computeLayout(cfg({ guestMem: MAX_GUEST_MEM, vcpus: MAX_VCPUS, backing: 'mixed', tlbPageSlots: 4096, tlbBlockSlots: 1024 }));
    expect(L.frames - 1).toBeLessThanOrEqual(S2_OA_MAX);
    expect(L.frames - 1).toBeLessThanOrEqual(HPTE_FRAME_MASK);
    expect(L.tables - 1).toBeLessThanOrEqual(S2_OA_MAX);
    // every RAM and device region gets a 2 MiB group at populate, with spares
    expect(L.groups - 1).toBeGreaterThan(L.regions);
    // one Int32Array over the whole region
    expect(L.words).toBeLessThan(2 ** 31);
  });
});
