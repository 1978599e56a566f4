import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // Two test files at once on a 2-core machine: most files are
    // single-threaded sim runs; the threads-mode tests measure work, not
    // time, so they hold when they share the cores.
    maxWorkers: 2,
    reporters: ['default'],
  },
});
