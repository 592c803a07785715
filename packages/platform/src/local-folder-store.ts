import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { type ObjectStat, type ObjectStore, ObjectNotFoundError, assertSafeKey } from './object-store.ts';

/** The embedded object store: one file per object under a root folder; metadata in a sidecar. */
export class LocalFolderStore implements ObjectStore {
  constructor(readonly root: string) {}

  private path(key: string): string {
    assertSafeKey(key);
    return join(this.root, ...key.split('/'));
  }

  async put(key: string, data: Uint8Array, options: { metadata?: Record<string, string> } = {}): Promise<void> {
    const target = this.path(key);
    // Write to temporary names and rename: a crash never leaves a partial object under the real
    // key. Both files are written before either is renamed, so a write that fails (a full disk)
    // leaves the object as it was, its metadata included.
    const tmp = `${target}.tmp-${randomBytes(6).toString('hex')}`;
    const metadata = options.metadata && Object.keys(options.metadata).length > 0 ? options.metadata : undefined;
    // Only a failed put leaves temporaries to remove: a put is 4 file operations, not 6, which
    // is what a controller storing 5000 cells at a sweep's start pays (bench/controller-scale.ts).
    let done = false;
    try {
      await mkdir(dirname(target), { recursive: true });
      if (metadata) await writeFile(`${tmp}.meta`, JSON.stringify(metadata));
      await writeFile(tmp, data);
      if (metadata) await rename(`${tmp}.meta`, `${target}.meta~`);
      else await rm(`${target}.meta~`, { force: true });
      await rename(tmp, target);
      done = true;
    } catch (error) {
      throw storeError(`cannot store ${key} (${data.length} bytes) at ${target}`, error);
    } finally {
      if (!done) {
        await rm(tmp, { force: true });
        await rm(`${tmp}.meta`, { force: true });
      }
    }
  }

  async get(key: string): Promise<Buffer> {
    try {
      return await readFile(this.path(key));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new ObjectNotFoundError(key, this.root);
      throw error;
    }
  }

  async stat(key: string): Promise<ObjectStat | undefined> {
    const path = this.path(key);
    try {
      const info = await stat(path);
      if (!info.isFile()) return undefined;
      let metadata: Record<string, string> = {};
      try {
        metadata = JSON.parse(await readFile(`${path}.meta~`, 'utf8')) as Record<string, string>;
      } catch {
        metadata = {};
      }
      return { size: info.size, metadata };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
  }

  async list(prefix: string): Promise<string[]> {
    const keys: string[] = [];
    const walk = async (dir: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw error;
      }
      for (const entry of entries) {
        const full = join(dir, entry.name);
        if (entry.isDirectory()) await walk(full);
        else if (!entry.name.endsWith('.meta~') && !entry.name.includes('.tmp-')) {
          keys.push(relative(this.root, full).split(sep).join('/'));
        }
      }
    };
    await walk(this.root);
    return keys.filter((key) => key.startsWith(prefix)).sort();
  }

  async delete(key: string): Promise<void> {
    const path = this.path(key);
    await rm(path, { force: true });
    await rm(`${path}.meta~`, { force: true });
  }

  describe(key: string): string {
    return join(this.root, ...key.split('/'));
  }
}

/**
 * An fs error with what was being done and where; ENOSPC and EDQUOT are said in words, since
 * Node's own message for them names neither the file nor the object.
 */
function storeError(context: string, error: unknown): Error {
  const code = (error as NodeJS.ErrnoException).code;
  const reason =
    code === 'ENOSPC'
      ? 'no space left on the device (ENOSPC): free space or move the store (TRANSFERLAB_STORE)'
      : code === 'EDQUOT'
        ? 'disk quota exceeded (EDQUOT)'
        : (error as Error).message;
  const wrapped = new Error(`${context}: ${reason}`, { cause: error });
  if (code !== undefined) (wrapped as NodeJS.ErrnoException).code = code;
  return wrapped;
}
