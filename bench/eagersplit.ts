/**
 * `s2stress bench --only eager-split`: turning dirty logging on with and
 * without eager page splitting (6.5, KVM_CAP_ARM_EAGER_SPLIT_CHUNK_SIZE) on
 * a THP-backed guest, side by side in one run, in the model of the kernel's
 * dirty_log_perf_test (scenario `dirty-log-perf`): each pass populates the
 * guest (logging off: every 2 MiB range a block), turns logging on (timed:
 * KVM_SET_USER_MEMORY_REGION with KVM_MEM_LOG_DIRTY_PAGES, write-protect
 * and, with eager splitting, kvm_mmu_split_memory_region), then the vCPUs
 * write every page (the first pass of writes after logging on: without
 * eager splitting each block is split by a fault, with it every write takes
 * only a permission fault on its PTE).
 */
import os from 'node:os';
import { formatBytes, type ProfileName } from '../src/config.js';
import { readPerfLog, type PerfSummary } from '../src/actors/perflog.js';
import { dirtyLogRunOptions, runWithPerfLogs, type DirtyLogOptions } from './dirtylog.js';

export const EAGER_SPLIT_PROFILE: ProfileName = '6.10';
/** The chunk sizes compared: off (the capability's default) and 2M. */
export const EAGER_SPLIT_CHUNKS = [0, 2 * 1024 * 1024] as const;

export interface EagerSplitPoint {
  vcpus: number;
  chunk: number;
  result: 'pass' | 'fail';
  error: string | null;
  /** Turning logging on, ms per pass (mean over the measured passes). */
  enableMs: number;
  /** The first iteration after logging on: stage-2 faults and dirty time (ms). */
  firstFaults: number;
  firstMs: number;
  /** Later iterations: faults per iteration. */
  restFaults: number;
  /** Blocks split at logging-on (eager) and by faults. */
  eagerSplits: number;
  faultSplits: number;
  perf: PerfSummary | null;
}

export interface EagerSplitRow {
  vcpus: number;
  off: EagerSplitPoint;
  on: EagerSplitPoint;
  enableRatio: number | null;
  firstFaultsRatio: number | null;
  firstMsRatio: number | null;
}

export interface EagerSplitResult {
  profile: ProfileName;
  vcpuMem: string;
  passes: number;
  cores: number;
  rows: EagerSplitRow[];
  command: string;
}

async function point(o: DirtyLogOptions, vcpus: number, chunk: number): Promise<EagerSplitPoint> {
  const ro = { ...dirtyLogRunOptions(o, EAGER_SPLIT_PROFILE, vcpus), eagerSplitChunk: chunk };
  const { r, logs } = await runWithPerfLogs(ro);
  const perf = logs.length === 1 ? readPerfLog(logs[0]) : null;
  return {
    vcpus,
    chunk,
    result: r.result,
    error: r.error,
    enableMs: perf?.enableMs ?? 0,
    firstFaults: perf?.first.faultsPerIteration ?? 0,
    firstMs: perf?.first.dirtyMsPerIteration ?? 0,
    restFaults: perf?.rest.faultsPerIteration ?? 0,
    eagerSplits: r.counters.eagerSplits ?? 0,
    faultSplits: r.counters.blockSplits ?? 0,
    perf,
  };
}

const ratio = (a: number, b: number): number | null => (b > 0 ? a / b : null);

export async function eagerSplitBench(o: DirtyLogOptions, progress: (line: string) => void): Promise<EagerSplitResult> {
  const cores = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  const rows: EagerSplitRow[] = [];
  for (const [k, v] of o.vcpus.entries()) {
    // Side by side; which runs first alternates from one count to the next.
    const order = k % 2 === 0 ? [0, 1] : [1, 0];
    const pts: EagerSplitPoint[] = [];
    for (const i of order) {
      const p = await point(o, v, EAGER_SPLIT_CHUNKS[i]);
      progress(`  eager-split: ${v} vCPU(s), chunk ${p.chunk === 0 ? '0 (off)' : formatBytes(p.chunk)}: logging on ${p.enableMs.toFixed(2)} ms, first iteration ${p.firstFaults.toFixed(0)} faults, ${p.result}`);
      pts[i] = p;
    }
    const [off, on] = pts;
    rows.push({ vcpus: v, off, on, enableRatio: ratio(on.enableMs, off.enableMs), firstFaultsRatio: ratio(on.firstFaults, off.firstFaults), firstMsRatio: ratio(on.firstMs, off.firstMs) });
  }
  return {
    profile: EAGER_SPLIT_PROFILE,
    vcpuMem: formatBytes(o.vcpuMem),
    passes: o.passes,
    cores,
    rows,
    command: `s2stress run --scenario dirty-log-perf --profile ${EAGER_SPLIT_PROFILE} --backing thp --write-pct 100 --vcpus N --guest-mem <N x ${formatBytes(o.vcpuMem)}> [--eager-split-chunk 2M]`,
  };
}
