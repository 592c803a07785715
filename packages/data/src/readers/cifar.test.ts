import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeTar } from '../archive.ts';
import { DataError } from '../errors.ts';
import { CIFAR100_COARSE_CLASSES, CIFAR100_FINE_CLASSES, CIFAR10_CLASSES, readCifar10, readCifar100 } from './cifar.ts';
import { readDataset } from './index.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'transferlab-cifar-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The value of channel c at (y, x) of image `seed`: distinct per channel so a CHW/HWC mix-up shows. */
function pixel(seed: number, c: number, y: number, x: number): number {
  return (seed * 13 + c * 85 + y * 3 + x) & 255;
}

function record(labels: number[], seed: number): Buffer {
  const out = Buffer.alloc(labels.length + 3072);
  labels.forEach((l, i) => (out[i] = l));
  for (let c = 0; c < 3; c++)
    for (let y = 0; y < 32; y++)
      for (let x = 0; x < 32; x++) out[labels.length + c * 1024 + y * 32 + x] = pixel(seed, c, y, x);
  return out;
}

function expectHwc(pixels: Uint8Array, index: number, seed: number): void {
  for (const [y, x] of [
    [0, 0],
    [5, 17],
    [31, 31],
  ] as const) {
    for (let c = 0; c < 3; c++) expect(pixels[index * 3072 + (y * 32 + x) * 3 + c]).toBe(pixel(seed, c, y, x));
  }
}

/** CIFAR-10 release with `perBatch` records per batch file; labels cycle through 0..9. */
function cifar10Files(perBatch: number, meta = true): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  let seed = 0;
  for (const name of ['data_batch_1', 'data_batch_2', 'data_batch_3', 'data_batch_4', 'data_batch_5', 'test_batch']) {
    const records: Buffer[] = [];
    for (let i = 0; i < perBatch; i++, seed++) records.push(record([seed % 10], seed));
    files.set(`${name}.bin`, Buffer.concat(records));
  }
  if (meta) files.set('batches.meta.txt', Buffer.from(CIFAR10_CLASSES.map((c) => c.toUpperCase()).join('\n') + '\n\n'));
  return files;
}

async function writeFolder(folder: string, files: Map<string, Buffer>): Promise<void> {
  await mkdir(folder, { recursive: true });
  for (const [name, bytes] of files) await writeFile(join(folder, name), bytes);
}

async function caught(promise: Promise<unknown>): Promise<DataError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(DataError);
  return error as DataError;
}

describe('CIFAR-10', () => {
  it('reads a folder of the binary release, converting CHW records to HWC', async () => {
    await writeFolder(join(dir, 'cifar'), cifar10Files(3));
    const ds = await readCifar10({ kind: 'cifar10', path: join(dir, 'cifar') });
    expect(ds.shape).toEqual([32, 32, 3]);
    expect(ds.classes[0]).toBe('AIRPLANE');
    expect(ds.train.count).toBe(15);
    expect(ds.test?.count).toBe(3);
    expect([...ds.train.labels]).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4]);
    expect([...ds.test!.labels]).toEqual([5, 6, 7]);
    expectHwc(ds.train.pixels, 0, 0);
    expectHwc(ds.train.pixels, 14, 14);
    expectHwc(ds.test!.pixels, 2, 17);
  });

  it('reads a .tar.gz with the release folder inside, and defaults class names without meta', async () => {
    const archive = join(dir, 'cifar-10-binary.tar.gz');
    const files = cifar10Files(2, false);
    await writeTar(
      archive,
      [
        { name: 'cifar-10-batches-bin/' },
        ...[...files].map(([name, data]) => ({ name: `cifar-10-batches-bin/${name}`, data })),
      ],
      { gzip: true },
    );
    const ds = await readDataset({ kind: 'cifar10', path: archive });
    expect(ds.classes).toEqual(CIFAR10_CLASSES);
    expect(ds.train.count).toBe(10);
    expectHwc(ds.train.pixels, 9, 9);
  });

  it('finds the release in the one sub-folder that holds it', async () => {
    await writeFolder(join(dir, 'extracted', 'cifar-10-batches-bin'), cifar10Files(1));
    const ds = await readCifar10({ kind: 'cifar10', path: join(dir, 'extracted') });
    expect(ds.train.count).toBe(5);
  });

  it('refuses a batch whose length is not a multiple of the record size', async () => {
    const files = cifar10Files(2);
    files.set('data_batch_3.bin', files.get('data_batch_3.bin')!.subarray(0, 3073 + 1000));
    await writeFolder(join(dir, 'cifar'), files);
    const error = await caught(readCifar10({ kind: 'cifar10', path: join(dir, 'cifar') }));
    const file = join(dir, 'cifar', 'data_batch_3.bin');
    expect(error.file).toBe(file);
    expect(error.message).toContain(file);
    expect(error.message).toContain('record size 3073');
    expect(error.message).toContain('length 4073');
  });

  it('names the archive entry of a truncated batch inside a .tar.gz', async () => {
    const files = cifar10Files(1);
    files.set('test_batch.bin', files.get('test_batch.bin')!.subarray(0, 3000));
    const archive = join(dir, 'c.tar.gz');
    await writeTar(
      archive,
      [...files].map(([name, data]) => ({ name: `bin/${name}`, data })),
      { gzip: true },
    );
    const error = await caught(readCifar10({ kind: 'cifar10', path: archive }));
    expect(error.file).toBe(archive);
    expect(error.entry).toBe('bin/test_batch.bin');
    expect(error.message).toContain('bin/test_batch.bin');
  });

  it('refuses a label out of range, with the offset of its byte', async () => {
    const files = cifar10Files(2);
    const batch = Buffer.from(files.get('data_batch_2.bin')!);
    batch[3073] = 12;
    files.set('data_batch_2.bin', batch);
    await writeFolder(join(dir, 'cifar'), files);
    const error = await caught(readCifar10({ kind: 'cifar10', path: join(dir, 'cifar') }));
    expect(error.message).toContain('data_batch_2.bin');
    expect(error.message).toMatch(/label 12 of record 1 is out of range 0\.\.9/);
    expect(error.offset).toBe(3073);
  });

  it('names a missing batch file', async () => {
    const files = cifar10Files(1);
    files.delete('data_batch_4.bin');
    await writeFolder(join(dir, 'cifar'), files);
    await expect(readCifar10({ kind: 'cifar10', path: join(dir, 'cifar') })).rejects.toThrow(
      /missing data_batch_4\.bin/,
    );
  });
});

describe('CIFAR-100', () => {
  async function release(): Promise<string> {
    const folder = join(dir, 'cifar-100-binary');
    const train = Buffer.concat([record([3, 30], 0), record([19, 99], 1), record([0, 0], 2)]);
    const test = Buffer.concat([record([7, 71], 3)]);
    await writeFolder(
      folder,
      new Map([
        ['train.bin', train],
        ['test.bin', test],
        ['fine_label_names.txt', Buffer.from(CIFAR100_FINE_CLASSES.join('\n'))],
      ]),
    );
    return folder;
  }

  it('reads fine labels', async () => {
    const ds = await readCifar100({ kind: 'cifar100', path: await release(), labels: 'fine' });
    expect(ds.name).toBe('cifar100-fine');
    expect(ds.classes).toHaveLength(100);
    expect([...ds.train.labels]).toEqual([30, 99, 0]);
    expect([...ds.test!.labels]).toEqual([71]);
    expectHwc(ds.train.pixels, 1, 1);
    expectHwc(ds.test!.pixels, 0, 3);
  });

  it('reads coarse labels, with default names when the names file is absent', async () => {
    const ds = await readCifar100({ kind: 'cifar100', path: await release(), labels: 'coarse' });
    expect(ds.classes).toEqual(CIFAR100_COARSE_CLASSES);
    expect(ds.classes).toHaveLength(20);
    expect([...ds.train.labels]).toEqual([3, 19, 0]);
  });

  it('refuses a file whose length is not a multiple of the 3074-byte record', async () => {
    const folder = await release();
    await writeFile(join(folder, 'train.bin'), record([1, 1], 0).subarray(0, 3073));
    const error = await caught(readCifar100({ kind: 'cifar100', path: folder, labels: 'fine' }));
    expect(error.message).toContain(join(folder, 'train.bin'));
    expect(error.message).toContain('record size 3074');
    expect(error.message).toContain('length 3073');
  });

  it('refuses a coarse label out of range', async () => {
    const folder = await release();
    await writeFile(join(folder, 'test.bin'), record([20, 5], 0));
    const error = await caught(readCifar100({ kind: 'cifar100', path: folder, labels: 'coarse' }));
    expect(error.message).toContain(join(folder, 'test.bin'));
    expect(error.message).toMatch(/label 20 of record 0 is out of range 0\.\.19/);
  });
});
