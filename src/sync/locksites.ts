/**
 * Call sites of mmu_lock, as lock_stat would name them. The hold of a fault
 * that dissolves a block or maps one is re-tagged to that site, so that each
 * row measures one kind of critical section.
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
