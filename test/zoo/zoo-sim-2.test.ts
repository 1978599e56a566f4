/**
 * The detection suite, sim mode, the defects of odd index (zoo-sim.test.ts
 * has the others and says what each test checks).
 */
import { describe } from 'vitest';
import { defineSimDetection } from './support.js';

describe('bug zoo detection, sim mode (the other half)', () => {
  defineSimDetection(1);
});
