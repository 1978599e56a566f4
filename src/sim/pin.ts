/**
 * Sim mode runs exactly one actor at a time, so its actor threads lose
 * nothing by sharing one CPU, and gain a cheaper hand-over: the baton passes
 * between two threads of the same core (a context switch) instead of waking
 * a thread on another core (an inter-processor interrupt, costly on virtual
 * machines). Node has no affinity call: each actor thread writes its kernel
 * thread id, and the orchestrator pins them all with taskset(1) once every
 * actor is ready (Linux only; elsewhere nothing is pinned).
 * Pinning changes no schedule: the baton alone decides who runs.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, readlinkSync } from 'node:fs';

/** The calling thread's kernel thread id (Linux), or null. */
export function threadId(): string | null {
  try {
    // "/proc/<pid>/task/<tid>"
    const tid = readlinkSync('/proc/thread-self').split('/').pop() ?? '';
    return /^\d+$/.test(tid) ? tid : null;
  } catch {
    return null;
  }
}

/**
 * Pin the threads `tids` to `cpu` (sched_setaffinity through taskset -p,
 * one shell for all: a process started per thread from a process of many
 * threads costs more). True if every one took.
 */
export function pinThreads(tids: readonly number[], cpu: number): boolean {
  if (tids.length === 0 || !tids.every((t) => Number.isInteger(t) && t > 0)) return false;
  const script = 'c=$1; shift; for t do taskset -p -c "$c" "$t" >/dev/null || exit 1; done';
  const r = spawnSync('sh', ['-c', script, 'pin', String(cpu), ...tids.map(String)], { stdio: 'ignore', timeout: 30_000 });
  return r.status === 0;
}

/** "0-3,8,10-11" (the kernel's cpu list format) as the list of CPUs. */
export function parseCpuList(s: string): number[] {
  const out: number[] = [];
  for (const part of s.trim().split(',')) {
    if (part === '') continue;
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) throw new Error(`not a CPU list: '${s}'`);
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    for (let c = lo; c <= hi; c++) out.push(c);
  }
  return out;
}

/** The CPUs the calling thread may run on (its affinity, as /proc shows it), or null where unknown. */
export function allowedCpus(): number[] | null {
  try {
    const status = readFileSync('/proc/thread-self/status', 'utf8');
    const line = /^Cpus_allowed_list:\s*(.+)$/m.exec(status);
    return line ? parseCpuList(line[1]) : null;
  } catch {
    return null;
  }
}

/** Same list, written compactly ("0-3,8"). */
export function formatCpuList(cpus: readonly number[]): string {
  const s = [...cpus].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < s.length; ) {
    let j = i;
    while (j + 1 < s.length && s[j + 1] === s[j] + 1) j++;
    parts.push(j > i ? `${s[i]}-${s[j]}` : String(s[i]));
    i = j + 1;
  }
  return parts.join(',');
}

let pinnable: boolean | null = null;

/** Can threads be pinned here (Linux with taskset)? Asked once per process. */
export function canPin(): boolean {
  if (pinnable === null) {
    const tid = threadId();
    pinnable = tid !== null && spawnSync('taskset', ['-p', tid], { stdio: 'ignore', timeout: 10_000 }).status === 0;
  }
  return pinnable;
}
