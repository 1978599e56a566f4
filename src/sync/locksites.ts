/**
 * Call sites of mmu_lock, as lock_stat would name them: one row each in the
 * lock_stat table.
 *
 * Each row measures one kind of critical section. A fault's hold is
 * re-tagged when it turns out to dissolve a block (`dissolve`) or to map one
 * (`block-map`), and the re-tag moves the whole acquisition (its count,
 * contention, bounce, wait and hold) to that row: `fault` is then the faults
 * that mapped a page or retried, and the rows add up to the lock's totals.
 *
 * `check` is the orchestrator's stop-the-world checks: they run while every
 * actor is parked at a safe point, check first that nobody holds mmu_lock,
 * then walk the tables under it (checkStoppedWorld()), so the row counts the
 * checks and shows how long they hold the lock. No row is printed for a site
 * that was never used.
 */
export const LOCK_SITE_NAMES = [
  'fault',
  'dissolve',
  'block-map',
  'wp-enable',
  'harvest',
  'notifier-start',
  'notifier-end',
  'change-pte',
  'check',
  'other',
] as const;
export type LockSiteName = (typeof LOCK_SITE_NAMES)[number];
export const LS: { readonly [K in LockSiteName]: number } = Object.fromEntries(
  LOCK_SITE_NAMES.map((n, i) => [n, i]),
) as { readonly [K in LockSiteName]: number };
