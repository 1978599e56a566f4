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

/**
 * lock_stat rows: an rwlock's read acquisitions have rows of their own, as
 * /proc/lock_stat keeps `&kvm->mmu_lock-R` apart from `-W`. The write (or
 * exclusive: every spinlock acquisition) row of site `s` is row `s`, its
 * read row `READ_ROW + s`.
 */
export const READ_ROW = LOCK_SITE_NAMES.length;
/** Rows of a LockStats: a write row and a read row per site. */
export const LOCK_ROWS = 2 * READ_ROW;
