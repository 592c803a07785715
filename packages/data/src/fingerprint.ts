import { createHash } from 'node:crypto';
import { lstat, readdir, readlink, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import type { DatasetSource } from './dataset.ts';
import { DataError, describeError } from './errors.ts';

/** More files than this in one dataset is not a dataset we can fingerprint by listing. */
const MAX_FILES = 2_000_000;

/**
 * A digest of what a dataset's files are now: every file's path (relative to the source's
 * path), size and modification time, so an edited, added or removed file changes it, without
 * reading any content. Where the dataset lives is not part of it: the same files moved with their
 * times (a new clone, a copied data folder) are the same dataset. Undefined for the built-in
 * MNIST, which is part of the installed code.
 */
export async function datasetFingerprint(source: DatasetSource): Promise<string | undefined> {
  const paths =
    source.kind === 'mnist'
      ? []
      : source.kind === 'idx'
        ? [source.trainImages, source.trainLabels, source.testImages, source.testLabels].filter(
            (path): path is string => path !== undefined,
          )
        : [source.path];
  if (paths.length === 0) return undefined;
  const hash = createHash('sha256');
  let files = 0;
  const visit = async (root: string, path: string): Promise<void> => {
    let info;
    try {
      info = await lstat(path);
    } catch (error) {
      throw new DataError(path, `cannot read: ${describeError(error)}`, { cause: error });
    }
    // A link is recorded by where it points, not followed: the walk never leaves the dataset
    // (the readers check where links inside it lead).
    if (info.isSymbolicLink() && path !== root) {
      hash.update(`${relative(root, path)}\0-> ${await readlink(path)}\n`);
      return;
    }
    if (path === root && info.isSymbolicLink()) {
      // The dataset's own path may be a link (confined already): its target is the dataset.
      info = await stat(path).catch((error: unknown) => {
        throw new DataError(path, `cannot read: ${describeError(error)}`, { cause: error });
      });
    }
    if (info.isDirectory()) {
      const entries = (await readdir(path)).filter((name) => !name.startsWith('.')).sort();
      for (const name of entries) await visit(root, join(path, name));
      return;
    }
    if (++files > MAX_FILES) throw new DataError(root, `holds more than ${MAX_FILES} files`);
    // Whole seconds: copies that keep times (cp -a, tar, rsync -t, Node's fs.cp) keep them to the
    // second at least, and some round the fraction.
    hash.update(`${relative(root, path)}\0${info.size}\0${Math.round(info.mtimeMs / 1000)}\n`);
  };
  for (const [index, path] of paths.entries()) {
    // A dataset whose files are gone may still be served from its decoded cache (`data fetch`):
    // there is nothing to compare then, and a reader that needs the files says they are missing.
    if ((await lstat(path).catch(() => undefined)) === undefined) return undefined;
    hash.update(`${index}\n`);
    await visit(path, path);
  }
  return hash.digest('hex').slice(0, 32);
}
