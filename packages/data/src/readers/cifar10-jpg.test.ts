import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { readDataset } from './index.ts';

// shared/ sits beside the project's root, both here and in CI (../shared/data/ from the root).
const TARBALL =
  process.env.TRANSFERLAB_CIFAR10_JPG ??
  fileURLToPath(new URL('../../../../../shared/data/cifar10-jpg.tar.gz', import.meta.url));

describe('real data: cifar10-jpg.tar.gz', () => {
  it('reads all 60,000 images as 10 classes of [32, 32, 3]', { timeout: 180_000 }, async () => {
    if (!existsSync(TARBALL)) {
      throw new Error(
        `CIFAR-10 jpg tarball not found at ${TARBALL}: it is expected in shared/data/ beside the project root ` +
          '(see shared/data/README.md), or at the path in TRANSFERLAB_CIFAR10_JPG',
      );
    }
    const started = performance.now();
    const ds = await readDataset({ kind: 'image-folder', path: TARBALL });
    const seconds = (performance.now() - started) / 1000;
    const images = ds.train.count + (ds.test?.count ?? 0);
    console.log(`cifar10-jpg: ${images} images in ${seconds.toFixed(1)} s, ${(images / seconds).toFixed(0)} images/s`);

    expect(ds.classes).toEqual([
      'airplane',
      'automobile',
      'bird',
      'cat',
      'deer',
      'dog',
      'frog',
      'horse',
      'ship',
      'truck',
    ]);
    expect(ds.shape).toEqual([32, 32, 3]);
    expect(ds.train.count).toBe(50_000);
    expect(ds.test?.count).toBe(10_000);
    expect(ds.train.pixels.length).toBe(50_000 * 32 * 32 * 3);
    const perClass = new Array<number>(10).fill(0);
    for (const label of ds.train.labels) perClass[label]!++;
    expect(perClass).toEqual(new Array(10).fill(5000));
    const testPerClass = new Array<number>(10).fill(0);
    for (const label of ds.test!.labels) testPerClass[label]!++;
    expect(testPerClass).toEqual(new Array(10).fill(1000));

    // Channel means close to CIFAR-10's published ones: the pixels are real, in RGB order.
    const sums = [0, 0, 0];
    const pixels = ds.train.pixels;
    for (let i = 0; i < pixels.length; i += 3) {
      sums[0]! += pixels[i]!;
      sums[1]! += pixels[i + 1]!;
      sums[2]! += pixels[i + 2]!;
    }
    const means = sums.map((s) => s / (pixels.length / 3) / 255);
    expect(means[0]).toBeCloseTo(0.491, 2);
    expect(means[1]).toBeCloseTo(0.482, 2);
    expect(means[2]).toBeCloseTo(0.447, 2);
  });
});
