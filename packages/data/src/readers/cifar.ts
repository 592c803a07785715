import { readdir, readFile, realpath, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { readTarEntries } from '../archive.ts';
import type { Dataset, ImageShape, SourceOf, Subset } from '../dataset.ts';
import { isWithinRoots } from '../data-roots.ts';
import { DataError, describeError } from '../errors.ts';

export const CIFAR_SHAPE: ImageShape = [32, 32, 3];
const PIXELS_PER_PLANE = 32 * 32;
const IMAGE_BYTES = 3 * PIXELS_PER_PLANE;
export const CIFAR10_RECORD_BYTES = 1 + IMAGE_BYTES;
export const CIFAR100_RECORD_BYTES = 2 + IMAGE_BYTES;

// prettier-ignore
export const CIFAR10_CLASSES = [
  'airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck',
];

// prettier-ignore
export const CIFAR100_COARSE_CLASSES = [
  'aquatic_mammals', 'fish', 'flowers', 'food_containers', 'fruit_and_vegetables',
  'household_electrical_devices', 'household_furniture', 'insects', 'large_carnivores',
  'large_man-made_outdoor_things', 'large_natural_outdoor_scenes', 'large_omnivores_and_herbivores',
  'medium_mammals', 'non-insect_invertebrates', 'people', 'reptiles', 'small_mammals', 'trees',
  'vehicles_1', 'vehicles_2',
];

// prettier-ignore
export const CIFAR100_FINE_CLASSES = [
  'apple', 'aquarium_fish', 'baby', 'bear', 'beaver', 'bed', 'bee', 'beetle', 'bicycle', 'bottle',
  'bowl', 'boy', 'bridge', 'bus', 'butterfly', 'camel', 'can', 'castle', 'caterpillar', 'cattle',
  'chair', 'chimpanzee', 'clock', 'cloud', 'cockroach', 'couch', 'crab', 'crocodile', 'cup', 'dinosaur',
  'dolphin', 'elephant', 'flatfish', 'forest', 'fox', 'girl', 'hamster', 'house', 'kangaroo', 'keyboard',
  'lamp', 'lawn_mower', 'leopard', 'lion', 'lizard', 'lobster', 'man', 'maple_tree', 'motorcycle', 'mountain',
  'mouse', 'mushroom', 'oak_tree', 'orange', 'orchid', 'otter', 'palm_tree', 'pear', 'pickup_truck', 'pine_tree',
  'plain', 'plate', 'poppy', 'porcupine', 'possum', 'rabbit', 'raccoon', 'ray', 'road', 'rocket',
  'rose', 'sea', 'seal', 'shark', 'shrew', 'skunk', 'skyscraper', 'snail', 'snake', 'spider',
  'squirrel', 'streetcar', 'sunflower', 'sweet_pepper', 'table', 'tank', 'telephone', 'television', 'tiger', 'tractor',
  'train', 'trout', 'tulip', 'turtle', 'wardrobe', 'whale', 'willow_tree', 'wolf', 'woman', 'worm',
];

const CIFAR10_TRAIN_FILES = [1, 2, 3, 4, 5].map((i) => `data_batch_${i}.bin`);
const CIFAR10_TEST_FILE = 'test_batch.bin';
const CIFAR10_META_FILE = 'batches.meta.txt';

/** A file of the release, with where it came from for messages. */
export interface CifarFile {
  bytes: Uint8Array;
  file: string;
  entry?: string;
}

function foundError(found: CifarFile, problem: string, offset?: number): DataError {
  return new DataError(found.file, problem, {
    ...(found.entry === undefined ? {} : { entry: found.entry }),
    ...(offset === undefined ? {} : { offset }),
  });
}

/**
 * Finds the release's files by base name in a folder (or the one sub-folder that holds them, as
 * the official tarballs wrap everything in `cifar-10-batches-bin/`), or inside a .tar/.tar.gz.
 */
async function findFiles(
  path: string,
  wanted: readonly string[],
  marker: string,
  roots?: readonly string[],
): Promise<Map<string, CifarFile>> {
  let info;
  try {
    info = await stat(path);
  } catch (error) {
    throw new DataError(path, `cannot open CIFAR folder or archive: ${describeError(error)}`, { cause: error });
  }
  const found = new Map<string, CifarFile>();
  if (!info.isDirectory()) {
    await readTarEntries(path, async (entry) => {
      const leaf = entry.name.slice(entry.name.lastIndexOf('/') + 1);
      if (entry.type === 'file' && wanted.includes(leaf) && !found.has(leaf)) {
        found.set(leaf, { bytes: await entry.read(), file: path, entry: entry.name });
      }
    });
    return found;
  }

  let dir = path;
  const has = async (d: string): Promise<boolean> => (await stat(join(d, marker)).catch(() => undefined)) !== undefined;
  if (!(await has(dir))) {
    const subdirs = (await readdir(dir, { withFileTypes: true })).filter((e) => e.isDirectory());
    for (const sub of subdirs) {
      if (await has(join(dir, sub.name))) {
        dir = join(dir, sub.name);
        break;
      }
    }
  }
  for (const name of wanted) {
    const file = join(dir, name);
    if (roots !== undefined) {
      // A file of the release linked to somewhere outside the data roots is refused unread.
      const target = await realpath(file).catch(() => undefined);
      if (target !== undefined && !(await isWithinRoots(target, roots))) {
        throw new DataError(file, 'is a symbolic link that leads outside the data root(s)');
      }
    }
    const bytes = await readFile(file).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return undefined;
      throw new DataError(file, `cannot read file: ${describeError(error)}`, { cause: error });
    });
    if (bytes !== undefined) found.set(name, { bytes, file });
  }
  return found;
}

function requireFile(found: Map<string, CifarFile>, name: string, path: string): CifarFile {
  const file = found.get(name);
  if (file === undefined) throw new DataError(path, `missing ${name} (not a CIFAR binary release?)`);
  return file;
}

function parseNames(found: CifarFile | undefined, expected: number, fallback: string[]): string[] {
  if (found === undefined) return fallback;
  const names = Buffer.from(found.bytes)
    .toString('utf8')
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line !== '');
  if (names.length !== expected) {
    throw foundError(found, `expected ${expected} class names, found ${names.length}`);
  }
  return names;
}

export interface CifarRecordLayout {
  /** Label bytes before each image: 1 for CIFAR-10, 2 (coarse, fine) for CIFAR-100. */
  labelBytes: 1 | 2;
  /** Which of the label bytes to use. */
  labelIndex: number;
  classes: number;
}

/** Parses records of label byte(s) + a 32x32x3 image stored channel-planar (CHW), into HWC. */
export function parseCifarRecords(found: CifarFile, layout: CifarRecordLayout): Subset {
  const { bytes } = found;
  const recordBytes = layout.labelBytes + IMAGE_BYTES;
  if (bytes.length === 0 || bytes.length % recordBytes !== 0) {
    throw foundError(
      found,
      `length ${bytes.length} is not a positive multiple of the record size ${recordBytes} ` +
        `(${layout.labelBytes} label byte(s) + ${IMAGE_BYTES} pixel bytes): truncated or not a CIFAR batch`,
    );
  }
  const count = bytes.length / recordBytes;
  const pixels = new Uint8Array(count * IMAGE_BYTES);
  const labels = new Int32Array(count);
  for (let r = 0; r < count; r++) {
    const base = r * recordBytes;
    const label = bytes[base + layout.labelIndex]!;
    if (label >= layout.classes) {
      throw foundError(
        found,
        `label ${label} of record ${r} is out of range 0..${layout.classes - 1}`,
        base + layout.labelIndex,
      );
    }
    labels[r] = label;
    const red = base + layout.labelBytes;
    const out = r * IMAGE_BYTES;
    for (let p = 0; p < PIXELS_PER_PLANE; p++) {
      const o = out + p * 3;
      pixels[o] = bytes[red + p]!;
      pixels[o + 1] = bytes[red + PIXELS_PER_PLANE + p]!;
      pixels[o + 2] = bytes[red + 2 * PIXELS_PER_PLANE + p]!;
    }
  }
  return { count, pixels, labels };
}

function concatSubsets(parts: Subset[]): Subset {
  const count = parts.reduce((n, s) => n + s.count, 0);
  const pixels = new Uint8Array(count * IMAGE_BYTES);
  const labels = new Int32Array(count);
  let at = 0;
  for (const part of parts) {
    pixels.set(part.pixels, at * IMAGE_BYTES);
    labels.set(part.labels, at);
    at += part.count;
  }
  return { count, pixels, labels };
}

export interface CifarReadOptions {
  /** When set, the release's files must lie inside these roots once links are resolved. */
  roots?: readonly string[];
}

/** CIFAR-10 binary release: data_batch_1..5.bin for training, test_batch.bin when present. */
export async function readCifar10(source: SourceOf<'cifar10'>, options: CifarReadOptions = {}): Promise<Dataset> {
  const found = await findFiles(
    source.path,
    [...CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE, CIFAR10_META_FILE],
    CIFAR10_TRAIN_FILES[0]!,
    options.roots,
  );
  const classes = parseNames(found.get(CIFAR10_META_FILE), 10, CIFAR10_CLASSES);
  const layout: CifarRecordLayout = { labelBytes: 1, labelIndex: 0, classes: classes.length };
  const train = concatSubsets(
    CIFAR10_TRAIN_FILES.map((name) => parseCifarRecords(requireFile(found, name, source.path), layout)),
  );
  const dataset: Dataset = { name: 'cifar10', classes, shape: [...CIFAR_SHAPE], train, source: source.path };
  const test = found.get(CIFAR10_TEST_FILE);
  if (test !== undefined) dataset.test = parseCifarRecords(test, layout);
  return dataset;
}

/** CIFAR-100 binary release: train.bin and test.bin, each record coarse label, fine label, image. */
export async function readCifar100(source: SourceOf<'cifar100'>, options: CifarReadOptions = {}): Promise<Dataset> {
  const namesFile = `${source.labels}_label_names.txt`;
  const found = await findFiles(source.path, ['train.bin', 'test.bin', namesFile], 'train.bin', options.roots);
  const classes =
    source.labels === 'fine'
      ? parseNames(found.get(namesFile), 100, CIFAR100_FINE_CLASSES)
      : parseNames(found.get(namesFile), 20, CIFAR100_COARSE_CLASSES);
  const layout: CifarRecordLayout = {
    labelBytes: 2,
    labelIndex: source.labels === 'coarse' ? 0 : 1,
    classes: classes.length,
  };
  const train = parseCifarRecords(requireFile(found, 'train.bin', source.path), layout);
  const dataset: Dataset = {
    name: `cifar100-${source.labels}`,
    classes,
    shape: [...CIFAR_SHAPE],
    train,
    source: source.path,
  };
  const test = found.get('test.bin');
  if (test !== undefined) dataset.test = parseCifarRecords(test, layout);
  return dataset;
}
