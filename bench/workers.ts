/**
 * Worker threads of the benchmarks: where their compiled files are, and
 * running one to its single result.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';

/** dist/bench/<name>, whether the caller runs compiled or from source. */
export function distFile(name: string): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'package.json'))) {
      const p = join(dir, 'dist', 'bench', name);
      if (!existsSync(p)) throw new Error(`${p} is missing: run \`npm run build\` first`);
      return p;
    }
    dir = dirname(dir);
  }
  throw new Error(`cannot find the package root to locate dist/bench/${name}`);
}

/** Start a worker on `file` with `data`; resolves with the one message it posts, once it has exited. */
export function runWorker<T>(file: string, data: unknown): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const w = new Worker(file, { workerData: data });
    let result: { ok: true; value: T } | null = null;
    w.once('message', (msg: T) => {
      result = { ok: true, value: msg };
    });
    w.once('error', reject);
    w.once('exit', (code) => {
      if (result) resolve(result.value);
      else reject(new Error(`benchmark worker ${file} exited with code ${code} without a result`));
    });
  });
}
