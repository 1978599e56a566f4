/**
 * Scheduling-point sites: every place in the protocol where another thread
 * could interleave with a shared-memory step. Numbered for speed, named for
 * reports and schedules.
 */
export const SITE_NAMES = [
  'lock.acquire',
  'lock.spin',
  'lock.release',
  'access.tlb',
  'access.walk',
  'access.store',
  'access.load',
  'fault.entry',
  'fault.seq',
  'fault.gfn_to_pfn',
  'fault.locked',
  'fault.done',
  'pgtable.write',
  'pgtable.walk',
  'tlb.flush',
  'tlb.flush.wait',
  'hostpt.lock',
  'hostpt.migrating',
  'host.op',
  'notifier.start',
  'notifier.end',
  'srcu.read',
  'srcu.sync',
  'memslot.publish',
  'dirty.mark',
  'dirty.harvest',
  'migrate.copy',
  'memcache.topup',
  'frame.alloc',
  'park',
  'actor.loop',
  'fault.retry',
  'pgtable.resched',
] as const;

export type SiteName = (typeof SITE_NAMES)[number];

export const SITE: { readonly [K in SiteName]: number } = Object.fromEntries(
  SITE_NAMES.map((n, i) => [n, i]),
) as { readonly [K in SiteName]: number };

export function siteName(site: number): string {
  return SITE_NAMES[site] ?? `site#${site}`;
}
