/**
 * The detection suite, sim mode: every injectable defect is reported, by
 * the invariant expected to catch it, within a fixed budget of seeds, and
 * the clean profile it is injected into passes the very same seed and
 * configuration, so no detection is a false alarm. Threads mode:
 * zoo-threads.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { BUGS } from '../../src/profiles.js';
import type { Report } from '../../stress/report.js';
import { why } from '../harness/util.js';
import { defineSimDetection, go } from './support.js';

/** This file takes the defects of even index, zoo-sim-2.test.ts the odd ones: two files run side by side. */
const PART = 0;

describe('bug zoo detection, sim mode (every other defect; the rest: zoo-sim-2.test.ts)', () => {
  defineSimDetection(PART);

  // A configuration nobody tuned for this defect: everything at once, every
  // backing, a 64 MiB guest (16 384 pages, where uniformly drawn host
  // operations almost never meet a fault's window).
  it('no-notifier-retry is caught in sim mode in the mixed scenario (3 vCPUs, 64 MiB, mixed backing, 80 000 accesses) within seeds 1..3', async () => {
    const args = ['--mode', 'sim', '--bug', 'no-notifier-retry', '--scenario', 'mixed', '--vcpus', '3', '--guest-mem', '64M', '--backing', 'mixed', '--ops', '80000'];
    let caught: Report | null = null;
    for (const seed of [1, 2, 3]) {
      const r = await go([...args, '--seed', String(seed)]);
      if (r.result === 'fail') {
        caught = r;
        break;
      }
    }
    expect(caught, 'no-notifier-retry not caught in the mixed configuration, seeds 1..3').not.toBeNull();
    // The invariants that name this defect (BUGS: expected and also).
    const info = BUGS.find((b) => b.name === 'no-notifier-retry')!;
    const accepted = [info.expected, ...(info.also ?? [])];
    expect(caught!.violations.some((v) => accepted.includes(v.invariant)), why(caught!)).toBe(true);
  }, 300_000);
});
