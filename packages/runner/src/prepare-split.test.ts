import { mkdir, mkdtemp, rm } from 'node:fs/promises';
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

    // With the images gone, a new split (seed 2) can only come from the cached shards.
    await rm(join(work, 'images'), { recursive: true });
    const second = expandGrid(spec(2)).splits[1]!;
    const manifests = await ensureSplits(store, [second], { specDir: work });
    const manifest = manifests.get(second.id)!;
    expect(manifest.halves.A.classes.length + manifest.halves.B.classes.length).toBe(4);
  });
});
