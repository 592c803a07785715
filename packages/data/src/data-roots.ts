import { realpath } from 'node:fs/promises';
import { delimiter, dirname, isAbsolute, resolve, sep } from 'node:path';

/**
 * A path a request named that lies outside every data root, lexically or once its symbolic
 * links are resolved. The message names the field and the path as the caller wrote it, never
 * where it leads nor anything found there.
 */
export class PathOutsideRootsError extends Error {
  override readonly name = 'PathOutsideRootsError';
  constructor(
    readonly field: string,
    readonly path: string,
    reason: string,
  ) {
    super(`${field}: '${clip(path)}' ${reason}`);
  }
}

function clip(text: string, max = 200): string {
  return text.length <= max ? text : `${text.slice(0, max)}… (${text.length - max} more characters)`;
}

/**
 * TRANSFERLAB_DATA_ROOT as a list of absolute folders (several are separated by ':'), or []
 * when unset: then no path from a request is accepted.
 */
export function parseDataRoots(value: string | undefined): string[] {
  if (value === undefined || value.trim() === '') return [];
  const roots = value.split(delimiter).filter((root) => root !== '');
  for (const root of roots) {
    if (!isAbsolute(root)) throw new Error(`TRANSFERLAB_DATA_ROOT: '${root}' must be an absolute path`);
  }
  return roots.map((root) => resolve(root));
}

const inside = (path: string, root: string): boolean =>
  path === root || path.startsWith(root.endsWith(sep) ? root : root + sep);

/** The real path of `path`, or of its deepest existing ancestor joined with the rest. */
async function realOrAncestor(path: string): Promise<string> {
  try {
    return await realpath(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const parent = dirname(path);
    if ((code === 'ENOENT' || code === 'ENOTDIR') && parent !== path) {
      return resolve(await realOrAncestor(parent), path.slice(parent.length + 1));
    }
    throw error;
  }
}

/**
 * Confines a path from a request to the data roots: relative paths resolve against the first
 * root, `..` cannot climb out, and symbolic links are followed (realpath) before the check, so a
 * link inside a root that leads out of it is refused too. Returns the resolved real path, which
 * the caller reads instead of the one it was given.
 */
export async function confinePath(path: string, roots: readonly string[], field: string): Promise<string> {
  if (roots.length === 0) {
    throw new PathOutsideRootsError(
      field,
      path,
      'cannot be read: this server has no data root (TRANSFERLAB_DATA_ROOT), so it reads no dataset files',
    );
  }
  if (path.includes('\0')) throw new PathOutsideRootsError(field, path, 'contains a NUL byte');
  const lexical = isAbsolute(path) ? resolve(path) : resolve(roots[0]!, path);
  if (!roots.some((root) => inside(lexical, root))) {
    throw new PathOutsideRootsError(field, path, `is outside the data root(s) ${roots.join(', ')}`);
  }
  let real: string;
  try {
    real = await realOrAncestor(lexical);
  } catch (error) {
    // ENAMETOOLONG, ELOOP, EACCES: the path cannot be resolved, so it is not read either.
    throw new PathOutsideRootsError(
      field,
      path,
      `cannot be resolved (${(error as NodeJS.ErrnoException).code ?? 'error'})`,
    );
  }
  const realRoots = await Promise.all(roots.map((root) => realOrAncestor(root)));
  if (!realRoots.some((root) => inside(real, root))) {
    throw new PathOutsideRootsError(
      field,
      path,
      `leads outside the data root(s) ${roots.join(', ')} through a symbolic link`,
    );
  }
  return real;
}

/** Whether a path already resolved by the file system (realpath) lies inside one of the roots. */
export async function isWithinRoots(realPath: string, roots: readonly string[]): Promise<boolean> {
  const realRoots = await Promise.all(roots.map((root) => realOrAncestor(root)));
  return realRoots.some((root) => inside(realPath, root));
}
