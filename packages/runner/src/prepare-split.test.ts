import { mkdir, mkdtemp, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { expandGrid, validateSpec } from '@transferlab/experiment';
import { LocalFolderStore } from '@transferlab/platform';
import { ensureSplits } from './prepare-split.ts';

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
});
