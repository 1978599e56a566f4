/**
 * Stage-2 geometry and descriptor encoding.
 *
 * Geometry follows arm LPAE / arm64 with 4 KiB granule, three levels as the
 * 2014 arch/arm/kvm/mmu.c walks them (the PUD level is folded into the PGD):
 *
 *   PGD (level 1): 512 entries of 1 GiB, each a table pointer to a PMD table
 *   PMD (level 2): 512 entries of 2 MiB, each a block or a table pointer
 *   PTE (level 3): 512 entries of 4 KiB pages
 *
 * The model works in guest frame numbers (gfn, IPA >> PAGE_SHIFT) so that all
 * arithmetic stays in 32-bit integers.
 *
 * A descriptor is one 32-bit word. Bits are named one by one, as the seed's
 * review asked for flags ("I can decipher it without any effort").
 */

export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 1 << PAGE_SHIFT;
export const PTRS_PER_TABLE = 512;
/** Pages covered by one PMD entry (2 MiB). */
export const PTRS_PER_PMD = 512;
export const PMD_SHIFT = 21;
export const PMD_SIZE = 1 << PMD_SHIFT;
/** Pages covered by one PGD entry (1 GiB). */
export const PAGES_PER_PGD_ENTRY = PTRS_PER_TABLE * PTRS_PER_PMD;
export const PGDIR_SHIFT = 30;

export const LEVEL_PGD = 1;
export const LEVEL_PMD = 2;
export const LEVEL_PTE = 3;

/** Descriptor bit 0: the entry is valid. */
export const S2_VALID = 1 << 0;
/** Descriptor bit 1: at PGD/PMD level a table pointer, at PTE level a page (arm: 0b11). */
export const S2_TYPE_TABLE = 1 << 1;
/** S2AP[0]: readable. */
export const S2_S2AP_READ = 1 << 2;
/** S2AP[1]: writable. */
export const S2_S2AP_WRITE = 1 << 3;
/** Access flag. */
export const S2_AF = 1 << 4;
/** MemAttr: device memory (PAGE_S2_DEVICE). */
export const S2_MEMATTR_DEVICE = 1 << 5;
/**
 * Software bit of an invalid entry: KVM_INVALID_PTE_LOCKED (Linux 6.2,
 * arch/arm64/kvm/hyp/pgtable.c), the entry owned by one walker between the
 * "break" and the "make" of break-before-make. Invalid to the hardware
 * walker (bit 0 clear), not counted in its table's refcount.
 */
export const S2_SW_LOCKED = 1 << 6;
export const KVM_INVALID_PTE_LOCKED = S2_SW_LOCKED;
/** Output field: frame number (page/block) or table page index (table). */
export const S2_OA_SHIFT = 8;
export const S2_OA_MAX = (1 << 24) - 1;

export function pgdIndex(gfn: number): number {
  return gfn >>> 18;
}
export function pmdIndex(gfn: number): number {
  return (gfn >>> 9) & 511;
}
export function pteIndex(gfn: number): number {
  return gfn & 511;
}
/** gfn aligned down to its 2 MiB block (kernel: ipa & PMD_MASK). */
export function pmdAlignGfn(gfn: number): number {
  return gfn & ~511;
}

export function descOa(desc: number): number {
  return desc >>> S2_OA_SHIFT;
}
/** stage2_pte_is_locked(): the invalid LOCKED entry of a walker in the middle of break-before-make. */
export function descIsLocked(desc: number): boolean {
  return (desc & (S2_VALID | S2_SW_LOCKED)) === S2_SW_LOCKED;
}
export function descValid(desc: number): boolean {
  return (desc & S2_VALID) !== 0;
}
/** True for a table pointer at PGD or PMD level. */
export function descIsTable(desc: number): boolean {
  return (desc & (S2_VALID | S2_TYPE_TABLE)) === (S2_VALID | S2_TYPE_TABLE);
}
/** kvm_pmd_huge(): a valid PMD entry that is a block, not a table pointer. */
export function pmdIsBlock(desc: number): boolean {
  return (desc & (S2_VALID | S2_TYPE_TABLE)) === S2_VALID;
}
export function descWritable(desc: number): boolean {
  return (desc & S2_S2AP_WRITE) !== 0;
}
export function descReadable(desc: number): boolean {
  return (desc & S2_S2AP_READ) !== 0;
}

/** pgd_populate / pmd_populate_kernel: a table pointer to table page `table`. */
export function mkTableDesc(table: number): number {
  return (table << S2_OA_SHIFT) | S2_VALID | S2_TYPE_TABLE;
}

/** pfn_pte(pfn, PAGE_S2) or pfn_pte(pfn, PAGE_S2_DEVICE): read-only to start with. */
export function pfnPte(frame: number, device: boolean): number {
  let desc = (frame << S2_OA_SHIFT) | S2_VALID | S2_TYPE_TABLE | S2_S2AP_READ | S2_AF;
  if (device) desc |= S2_MEMATTR_DEVICE;
  return desc;
}

/** pfn_pmd(pfn, mem_type) + pmd_mkhuge(): a read-only block descriptor. */
export function pfnPmdHuge(frame: number): number {
  return (frame << S2_OA_SHIFT) | S2_VALID | S2_S2AP_READ | S2_AF;
}

/** kvm_set_s2pte_writable / kvm_s2pmd_mkwrite. */
export function mkWrite(desc: number): number {
  return desc | S2_S2AP_WRITE;
}
/** kvm_set_s2pte_readonly / kvm_set_s2pmd_readonly. */
export function mkReadonly(desc: number): number {
  return desc & ~S2_S2AP_WRITE;
}

export function describeDesc(desc: number, level: number): string {
  if (descIsLocked(desc)) return 'locked';
  if (!descValid(desc)) return 'none';
  if (level < LEVEL_PTE && descIsTable(desc)) return `table#${descOa(desc)}`;
  const kind = level === LEVEL_PTE ? 'page' : level === LEVEL_PMD ? 'block' : 'pud-block';
  const perm = descWritable(desc) ? 'rw' : 'ro';
  const dev = desc & S2_MEMATTR_DEVICE ? ' device' : '';
  return `${kind} frame ${descOa(desc)} ${perm}${dev}`;
}
