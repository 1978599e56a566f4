/**
 * Which CPU a sim run's actor threads share (--sim-cpu, src/sim/pin.ts).
 *
 * Runs started side by side (a campaign's jobs, a shell loop of `s2stress
 * run`, test files in parallel, zoo jobs) must not all land on one core
 * while another idles: each run claims its CPU in a small registry, one file
 * per claim in a directory of the user's, and `auto` takes the CPU with the
 * fewest live claims. A claim of a process that is gone (killed) counts for
 * nothing and is removed by the next claimer.
 */
import { mkdirSync, readdirSync, rmdirSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { allowedCpus, canPin } from '../src/sim/pin.js';

export interface CpuClaim {
  cpu: number;
  /** Give the CPU back (idempotent). */
  release(): void;
}

function defaultDir(): string {
  let who = 'user';
  try {
    who = String(userInfo().uid);
  } catch {
    /* no passwd entry: one directory for all */
  }
  return join(tmpdir(), `s2stress-cpus-${who}`);
}

const held = new Set<string>();
let exitHook = false;
let seq = 0;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));

/** Run `fn` holding the registry's lock (a directory: mkdir is atomic); a lock older than 2 s is stale. */
function withLock<T>(dir: string, fn: () => T): T {
  const lock = join(dir, 'lock');
  let locked = false;
  for (let i = 0; i < 400 && !locked; i++) {
    try {
      mkdirSync(lock);
      locked = true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') break;
      try {
        if (Date.now() - statSync(lock).mtimeMs > 2000) rmdirSync(lock);
      } catch {
        /* gone meanwhile */
      }
      Atomics.wait(sleeper, 0, 0, 5);
    }
  }
  try {
    return fn();
  } finally {
    if (locked) {
      try {
        rmdirSync(lock);
      } catch {
        /* removed as stale by another */
      }
    }
  }
}

/**
 * Claim a CPU among `allowed`: `want` itself, or (`auto`) the one with the
 * fewest live claims, ties broken by this process's id so that processes
 * starting together spread. `dir` is the registry (tests give their own).
 */
export function claimCpu(allowed: readonly number[], want: number | 'auto', dir = defaultDir()): CpuClaim {
  if (allowed.length === 0) throw new Error('claimCpu: no CPU allowed');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const { file, cpu } = withLock(dir, () => {
    const counts = new Map<number, number>(allowed.map((c) => [c, 0]));
    for (const name of readdirSync(dir)) {
      const m = /^cpu(\d+)\.(\d+)\.\d+$/.exec(name);
      if (!m) continue;
      if (!alive(Number(m[2]))) {
        try {
          unlinkSync(join(dir, name));
        } catch {
          /* removed by another */
        }
        continue;
      }
      const c = Number(m[1]);
      if (counts.has(c)) counts.set(c, counts.get(c)! + 1);
    }
    let cpu = typeof want === 'number' ? want : -1;
    if (cpu < 0) {
      let best = Infinity;
      const n = allowed.length;
      for (let i = 0; i < n; i++) {
        const c = allowed[(process.pid + i) % n];
        const k = counts.get(c)!;
        if (k < best) {
          best = k;
          cpu = c;
        }
      }
    }
    const f = join(dir, `cpu${cpu}.${process.pid}.${seq++}`);
    writeFileSync(f, '');
    return { file: f, cpu };
  });
  held.add(file);
  if (!exitHook) {
    exitHook = true;
    process.on('exit', () => {
      for (const f of held) {
        try {
          unlinkSync(f);
        } catch {
          /* already gone */
        }
      }
    });
  }
  return {
    cpu,
    release(): void {
      if (!held.delete(file)) return;
      try {
        unlinkSync(file);
      } catch {
        /* already gone */
      }
    },
  };
}

/**
 * The CPU for a sim run's actors from --sim-cpu (`auto`, `off` or a CPU
 * number, already validated): null when nothing is to be pinned (`off`, or
 * `auto` where threads cannot be pinned).
 */
export function simCpuFor(setting: string | undefined): CpuClaim | null {
  const s = setting ?? 'auto';
  if (s === 'off') return null;
  if (!canPin()) return null;
  const allowed = allowedCpus();
  if (!allowed || allowed.length === 0) return null;
  if (s === 'auto') return claimCpu(allowed, 'auto');
  return claimCpu(allowed, Number(s));
}
