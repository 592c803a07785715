// Issue 9, the fault suite: a full disk under the local store. The store's folder is a real
// 1 MiB tmpfs (we are root; CI runs in a similar container). Where `mount` is not permitted
// the test says so and falls back to a FAKE: writeFile under the store throws ENOSPC once a
// byte budget is spent (the fake writes nothing partial, so it proves less than the tmpfs).
// A put that does not fit fails naming the object and ENOSPC, and leaves no half-written object
// visible: not under its key, not in a listing, not as new metadata on the old bytes; a
// checkpoint that does not fit leaves the last complete one loadable. Figures: `full disk:`.
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { CorruptCheckpointError, type SerializedModel, loadCheckpoint, saveCheckpoint } from '@transferlab/nn';
import { LocalFolderStore } from '@transferlab/platform';

const run = promisify(execFile);
const MiB = 1024 * 1024;

// FAKE, used only where mount is refused: ENOSPC from writeFile under `fake.root` past `fake.free`.
const fake = vi.hoisted(() => ({ root: undefined as string | undefined, free: 0 }));
vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  const writeFile: typeof real.writeFile = async (path, data, options) => {
    if (fake.root !== undefined && String(path).startsWith(fake.root)) {
      const size = typeof data === 'string' ? Buffer.byteLength(data) : (data as Uint8Array).byteLength;
      if (size > fake.free) {
        throw Object.assign(new Error(`ENOSPC: no space left on device, write`), { code: 'ENOSPC', errno: -28 });
      }
      fake.free -= size;
    }
    return real.writeFile(path, data, options);
  };
  return { ...real, default: { ...real, writeFile }, writeFile };
});

let work: string;
let root: string;
let filesystem: 'tmpfs' | 'FAKE';

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tl-full-disk-'));
  root = join(work, 'store');
  await mkdir(root);
  try {
    await run('mount', ['-t', 'tmpfs', '-o', `size=${MiB},mode=0700`, 'tmpfs', root]);
    filesystem = 'tmpfs';
  } catch (error) {
    filesystem = 'FAKE';
    fake.root = root;
    fake.free = MiB;
    console.log(
      `full disk: mount refused (${(error as Error).message.split('\n')[0]}): using the FAKE ENOSPC injection`,
    );
  }
});

afterAll(async () => {
  if (filesystem === 'tmpfs') await run('umount', [root]).catch(() => run('umount', ['-l', root]));
  await rm(work, { recursive: true, force: true });
});

const bytes = (size: number, fill: number): Uint8Array => new Uint8Array(size).fill(fill);

/** Files under the store's folder, temporary ones included. */
async function filesOnDisk(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true, withFileTypes: true }))
    .filter((entry) => entry.isFile())
    .map((entry) => join(entry.parentPath, entry.name).slice(dir.length + 1));
}

function artifacts(size: number, fill: number): SerializedModel {
  const weightData = new ArrayBuffer(size);
  new Uint8Array(weightData).fill(fill);
  return { modelTopology: { note: 'no net: only bytes' }, weightSpecs: [], weightData };
}

describe(`a full disk under the local store`, () => {
  it('fails a put loudly and never shows a half-written object', async () => {
    const store = new LocalFolderStore(root);
    await store.put('cells/a/object.bin', bytes(200_000, 1), { metadata: { sha256: 'old' } });
    await store.put('fill.bin', bytes(600_000, 2));

    let failures = 0;
    // Over an existing object: the old bytes and the old metadata stay.
    const overwrite = store.put('cells/a/object.bin', bytes(400_000, 3), { metadata: { sha256: 'new' } });
    await expect(overwrite).rejects.toThrow(
      /^cannot store cells\/a\/object\.bin \(400000 bytes\) at .*object\.bin: no space left on the device \(ENOSPC\)/,
    );
    failures++;
    expect(Buffer.from(await store.get('cells/a/object.bin')).equals(Buffer.from(bytes(200_000, 1)))).toBe(true);
    expect((await store.stat('cells/a/object.bin'))?.metadata).toEqual({ sha256: 'old' });

    // A new object: absent, not listed.
    await expect(store.put('cells/b/new.bin', bytes(400_000, 4), { metadata: { sha256: 'x' } })).rejects.toThrow(
      /no space left on the device \(ENOSPC\)/,
    );
    failures++;
    expect(await store.stat('cells/b/new.bin')).toBeUndefined();
    expect(await store.list('')).toEqual(['cells/a/object.bin', 'fill.bin']);
    // Nothing temporary left behind to fill the disk further.
    expect((await filesOnDisk(root)).sort()).toEqual(['cells/a/object.bin', 'cells/a/object.bin.meta~', 'fill.bin']);

    // Space back: the same put goes through.
    await store.delete('fill.bin');
    if (filesystem === 'FAKE') fake.free += 600_000;
    await store.put('cells/b/new.bin', bytes(400_000, 4));
    expect((await store.stat('cells/b/new.bin'))?.size).toBe(400_000);
    await store.delete('cells/b/new.bin');
    if (filesystem === 'FAKE') fake.free += 400_000;
    console.log(
      `full disk: ${filesystem} of 1 MiB; ${failures} puts refused with ENOSPC named, 0 half-written objects visible`,
    );
  });

  it('keeps the last complete checkpoint when the next one does not fit', async () => {
    const store = new LocalFolderStore(root);
    const prefix = 'cells/c/checkpoint';
    await saveCheckpoint(store, prefix, { model: artifacts(150_000, 5) }, { keepPrevious: true });
    await store.put('fill.bin', bytes(450_000, 6));
    await expect(
      saveCheckpoint(store, prefix, { model: artifacts(300_000, 7) }, { keepPrevious: true }),
    ).rejects.toThrow(/^cannot store cells\/c\/checkpoint\/weights-[0-9a-f]{16}\.bin .*\(ENOSPC\)/);
    const loaded = await loadCheckpoint(store, prefix, {
      onRejected: (error: CorruptCheckpointError) => {
        throw new Error(`the last checkpoint was rejected: ${error.message}`);
      },
    });
    expect(Buffer.from(loaded!.model.weightData).equals(Buffer.from(bytes(150_000, 5)))).toBe(true);
    expect((await filesOnDisk(root)).filter((name) => name.includes('.tmp-'))).toEqual([]);
    console.log('full disk: a checkpoint that did not fit left the previous one complete and loadable');
  });
});
