import { existsSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { expandGrid, validateSpec } from '@transferlab/experiment';
import { datasetFingerprint, fetchDataset } from '@transferlab/data';
import { LocalFolderStore } from '@transferlab/platform';
import { putJson } from './cell-store.ts';
import { checkSplitData, ensureSplits, fingerprintKey } from './prepare-split.ts';

// shared/ sits beside the project's root, both here and in CI (../shared/data/ from the root).
const CIFAR10_JPG =
  process.env.TRANSFERLAB_CIFAR10_JPG ??
  fileURLToPath(new URL('../../../../shared/data/cifar10-jpg.tar.gz', import.meta.url));

async function imageFolder(root: string): Promise<void> {
  for (const [index, name] of ['ant', 'bee', 'cat', 'dog'].entries()) {
    await mkdir(join(root, 'train', name), { recursive: true });
    for (let i = 0; i < 6; i++) {
      const png = await sharp({
        create: { width: 8, height: 8, channels: 3, background: { r: index * 60, g: i * 30, b: 100 } },
      })
        .png()
        .toBuffer();
      await sharp(png).toFile(join(root, 'train', name, `${i}.png`));
    }
  }
}

/** Every image overwritten with zeros of its size, its times kept: a change no listing shows. */
async function blankImages(root: string): Promise<void> {
  for (const entry of await readdir(root, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const file = join(entry.parentPath, entry.name);
    const info = await stat(file);
    await writeFile(file, Buffer.alloc(info.size));
    await utimes(file, info.atimeMs / 1000, info.mtimeMs / 1000);
  }
}

describe('ensureSplits', () => {
  it('decodes an image folder once: later splits read its shards from the store', async () => {
    const work = await mkdtemp(join(tmpdir(), 'tl-split-'));
    await imageFolder(join(work, 'images'));
    const store = new LocalFolderStore(join(work, 'store'));
    const spec = (repeats: number) =>
      validateSpec({
        name: 'folder',
        dataset: { kind: 'image-folder', path: 'images', imageSize: [8, 8] },
        split: { kind: 'random', valPerClass: 1, testPerClass: 1 },
        net: { kind: 'small', width: 0.25 },
        layers: [1],
        arms: ['baseA'],
        repeats,
      });
    const [first] = expandGrid(spec(1)).splits;
    await ensureSplits(store, [first!], { specDir: work });
    expect((await store.list('datasets/')).some((key) => key.endsWith('/manifest.json'))).toBe(true);

    // Every image replaced by zeros of the same size and time: the files look unchanged, so a
    // new split (seed 2) comes from the cached shards; decoding the zeros would fail.
    await blankImages(join(work, 'images'));
    const second = expandGrid(spec(2)).splits[1]!;
    const manifests = await ensureSplits(store, [second], { specDir: work });
    const manifest = manifests.get(second.id)!;
    expect(manifest.halves.A.classes.length + manifest.halves.B.classes.length).toBe(4);
    await rm(work, { recursive: true, force: true });
  });

  it('refuses a split whose dataset changed since, and never serves an edited folder from the cache (issue 9)', async () => {
    const work = await mkdtemp(join(tmpdir(), 'tl-split-'));
    await imageFolder(join(work, 'images'));
    const store = new LocalFolderStore(join(work, 'store'));
    const spec = (repeats: number) =>
      validateSpec({
        name: 'folder',
        dataset: { kind: 'image-folder', path: 'images', imageSize: [8, 8] },
        split: { kind: 'random', valPerClass: 1, testPerClass: 1 },
        net: { kind: 'small', width: 0.25 },
        layers: [1],
        arms: ['baseA'],
        repeats,
      });
    const [first] = expandGrid(spec(1)).splits;
    await ensureSplits(store, [first!], { specDir: work });
    await ensureSplits(store, [first!], { specDir: work }); // unchanged: reused

    // One image edited: the old split is refused, naming the dataset and the split.
    await sharp({ create: { width: 8, height: 8, channels: 3, background: { r: 1, g: 2, b: 3 } } })
      .png()
      .toFile(join(work, 'images', 'train', 'ant', '0.png'));
    await utimes(join(work, 'images', 'train', 'ant', '0.png'), new Date(), new Date(Date.now() + 5000));
    await expect(ensureSplits(store, [first!], { specDir: work })).rejects.toThrow(
      new RegExp(`images: has changed since split ${first!.id} was made from it`),
    );

    // A new split of the edited folder decodes it again (zeros now fail loudly): no stale cache.
    await blankImages(join(work, 'images'));
    const second = expandGrid(spec(2)).splits[1]!;
    await ensureSplits(store, [second], { specDir: work }).then(
      () => {
        throw new Error('the new split was served from the cache of the old folder');
      },
      (error: Error) => expect(error.message).toMatch(/unreadable or truncated image/),
    );
    await rm(work, { recursive: true, force: true });
  });

  it('serves a split again from a moved copy of its folder, times kept (a new clone of a project)', async () => {
    const work = await mkdtemp(join(tmpdir(), 'tl-split-'));
    await imageFolder(join(work, 'first', 'images'));
    const store = new LocalFolderStore(join(work, 'store'));
    const spec = validateSpec({
      name: 'folder',
      dataset: { kind: 'image-folder', path: 'images', imageSize: [8, 8] },
      split: { kind: 'random', valPerClass: 1, testPerClass: 1 },
      net: { kind: 'small', width: 0.25 },
      layers: [1],
      arms: ['baseA'],
    });
    const [task] = expandGrid(spec).splits;
    const first = await ensureSplits(store, [task!], { specDir: join(work, 'first') });
    await cp(join(work, 'first'), join(work, 'second'), { recursive: true, preserveTimestamps: true });
    await rm(join(work, 'first'), { recursive: true });
    const second = await ensureSplits(store, [task!], { specDir: join(work, 'second') });
    expect(second.get(task!.id)).toEqual(first.get(task!.id));
    await rm(work, { recursive: true, force: true });
  });

  it('serves a catalog split from another data folder: its files are pinned by sha256, not by time', async () => {
    const work = await mkdtemp(join(tmpdir(), 'tl-split-'));
    const store = new LocalFolderStore(join(work, 'store'));
    const spec = validateSpec({
      name: 'catalog',
      dataset: { kind: 'catalog', name: 'cifar10-jpg' },
      net: { kind: 'small', width: 0.25 },
      layers: [1],
      arms: ['baseA'],
    });
    const [task] = expandGrid(spec).splits;
    if (!existsSync(CIFAR10_JPG)) {
      throw new Error(
        `CIFAR-10 jpg tarball not found at ${CIFAR10_JPG}: it is expected in shared/data/ beside the project root, or at the path in TRANSFERLAB_CIFAR10_JPG`,
      );
    }
    // Another clone imported the same tarball and made the split; its listing is recorded.
    const before = await fetchDataset('cifar10-jpg', { dir: join(work, 'first'), from: CIFAR10_JPG });
    await putJson(store, fingerprintKey(task!.id), { fingerprint: await datasetFingerprint(before) });
    // This clone imports its own copy: another folder and another time.
    const after = await fetchDataset('cifar10-jpg', { dir: join(work, 'second'), from: CIFAR10_JPG });
    if (!('path' in after)) throw new Error('cifar10-jpg is a file source');
    await utimes(after.path, new Date(), new Date(Date.now() + 60_000));
    expect(await datasetFingerprint(after)).not.toBe(await datasetFingerprint(before));
    await expect(
      checkSplitData(store, task!, { specDir: work, dataDir: join(work, 'second') }),
    ).resolves.toBeUndefined();
    await rm(work, { recursive: true, force: true });
  });
});
