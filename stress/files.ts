/**
 * Output files: checked writable before a run starts, written atomically (a
 * temporary file in the same directory, then a rename).
 */
import { closeSync, existsSync, openSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { ConfigError } from '../src/config.js';

/**
 * `--json FILE` must be writable before the run starts: the file is written
 * as a temporary file in the same directory and renamed, so the directory
 * must take a new file. Throws ConfigError naming --json and the path.
 */
export function checkJsonWritable(path: string): void {
  checkWritable('--json', path);
}

/** As checkJsonWritable, for any flag that names an output file (--html). */
export function checkWritable(flag: string, path: string): void {
  const full = resolve(path);
  const fail = (why: string): never => {
    throw new ConfigError(flag, `${flag} '${path}' cannot be written: ${why}`);
  };
  if (existsSync(full) && statSync(full).isDirectory()) fail('it is a directory');
  const dir = dirname(full);
  if (!existsSync(dir)) fail(`the directory '${dir}' does not exist`);
  const probe = tempPathFor(full);
  try {
    closeSync(openSync(probe, 'wx'));
    unlinkSync(probe);
  } catch (e) {
    fail((e as NodeJS.ErrnoException).code ?? (e as Error).message);
  }
}

function tempPathFor(full: string): string {
  return `${full}.${process.pid}.tmp`;
}

/** Write the report atomically: a temporary file in the same directory, then a rename. */
export function writeJsonAtomic(path: string, value: unknown): void {
  writeTextAtomic(path, JSON.stringify(value, null, 2) + '\n');
}

/** Write a text file atomically (a temporary file, then a rename). */
export function writeTextAtomic(path: string, text: string): void {
  const full = resolve(path);
  const tmp = tempPathFor(full);
  try {
    writeFileSync(tmp, text);
    renameSync(tmp, full);
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {
      // nothing was left behind
    }
    throw e;
  }
}

