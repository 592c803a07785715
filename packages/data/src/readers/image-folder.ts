import { readdir, readFile, realpath, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import sharp from 'sharp';
import { readTarEntries } from '../archive.ts';
import type { Dataset, ImageShape, SourceOf, Subset } from '../dataset.ts';
import { bytesPerImage } from '../dataset.ts';
import { isWithinRoots } from '../data-roots.ts';
import { DataError, describeError } from '../errors.ts';

export type ImageFolderSource = SourceOf<'image-folder'>;

export interface ImageFolderProgress {
  done: number;
  total: number;
}

export interface ReadImageFolderOptions {
  /** Images decoded at once (sharp decodes on libuv's thread pool, 4 threads by default). */
  concurrency?: number;
  onProgress?(p: ImageFolderProgress): void;
  /**
   * When set, a symbolic link inside the folder must lead to a place inside one of these roots
   * (a server's TRANSFERLAB_DATA_ROOT): a class folder linked to /etc is refused, not listed.
   */
  roots?: readonly string[];
}

export const IMAGE_EXTENSIONS = ['.jpg', '.jpeg', '.png'] as const;
export const DEFAULT_DECODE_CONCURRENCY = 4;

/** Where an image lives, for error messages: a file, or an entry of an archive. */
interface Location {
  file: string;
  entry?: string;
}

interface ImageRef {
  /** Path relative to the dataset root, '/'-separated. */
  path: string;
  load(): Promise<Buffer>;
  where: Location;
}

/** What a folder or an archive holds, in root-relative '/'-separated paths. */
interface Listing {
  dirs: Set<string>;
  images: ImageRef[];
  describe(relDir: string): Location;
}

function isImageName(name: string): boolean {
  const lower = name.toLowerCase();
  return !name.startsWith('.') && IMAGE_EXTENSIONS.some((ext) => lower.endsWith(ext));
}

/** Code-unit order, not locale order: class indices must not depend on the machine's locale. */
function byName(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function parentOf(path: string): string {
  const i = path.lastIndexOf('/');
  return i < 0 ? '' : path.slice(0, i);
}

function leafOf(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

/**
 * Keeps, per folder, the `limit` images that come first by name, whatever order they arrive in,
 * so a per-class limit on an archive is deterministic and holds at most `limit` encoded images
 * per class in memory.
 */
class FirstByName {
  private readonly perDir = new Map<string, ImageRef[]>();
  constructor(private readonly limit: number | undefined) {}

  add(ref: ImageRef): void {
    const dir = parentOf(ref.path);
    let kept = this.perDir.get(dir);
    if (kept === undefined) {
      kept = [];
      this.perDir.set(dir, kept);
    }
    if (this.limit === undefined) {
      kept.push(ref);
      return;
    }
    const last = kept[kept.length - 1];
    if (kept.length >= this.limit && last !== undefined && byName(ref.path, last.path) >= 0) return;
    let i = kept.length;
    while (i > 0 && byName(kept[i - 1]!.path, ref.path) > 0) i--;
    kept.splice(i, 0, ref);
    if (kept.length > this.limit) kept.pop();
  }

  all(): ImageRef[] {
    return [...this.perDir.values()].flat();
  }
}

/** Walks only as deep as the layouts go (<root>/<split>/<class>/<file>). */
async function listFolder(root: string, limit: number | undefined, roots?: readonly string[]): Promise<Listing> {
  const dirs = new Set<string>();
  const kept = new FirstByName(limit);
  const walk = async (rel: string, depth: number): Promise<void> => {
    const abs = rel === '' ? root : join(root, rel);
    let entries;
    try {
      entries = await readdir(abs, { withFileTypes: true });
    } catch (error) {
      throw new DataError(abs, `cannot list folder: ${describeError(error)}`, { cause: error });
    }
    for (const entry of entries) {
      if (entry.name.startsWith('.')) continue;
      const childRel = rel === '' ? entry.name : `${rel}/${entry.name}`;
      if (roots !== undefined && entry.isSymbolicLink()) {
        const target = await realpath(join(abs, entry.name)).catch(() => undefined);
        if (target === undefined || !(await isWithinRoots(target, roots))) {
          throw new DataError(join(abs, entry.name), 'is a symbolic link that leads outside the data root(s)');
        }
      }
      const isDir =
        entry.isDirectory() ||
        (entry.isSymbolicLink() && (await stat(join(abs, entry.name)).catch(() => undefined))?.isDirectory() === true);
      if (isDir) {
        dirs.add(childRel);
        if (depth < 2) await walk(childRel, depth + 1);
      } else if (depth > 0 && isImageName(entry.name)) {
        const file = join(abs, entry.name);
        kept.add({ path: childRel, where: { file }, load: () => readFile(file) });
      }
    }
  };
  await walk('', 0);
  return { dirs, images: kept.all(), describe: (relDir) => ({ file: relDir === '' ? root : join(root, relDir) }) };
}

/**
 * Archives often wrap everything in one top folder (`cifar10/train/cat/1.jpg`): strip such shared
 * leading folders while every image still keeps at least its class folder.
 */
function commonPrefix(paths: string[], trainName: string, testName: string): string[] {
  const prefix: string[] = [];
  const split = paths.map((p) => p.split('/'));
  for (;;) {
    const depth = prefix.length;
    const first = split[0]?.[depth];
    if (first === undefined || first === trainName || first === testName) return prefix;
    if (!split.every((segs) => segs[depth] === first && segs.length - depth >= 3)) return prefix;
    prefix.push(first);
  }
}

async function listArchive(
  archive: string,
  limit: number | undefined,
  names: { train: string; test: string },
): Promise<Listing> {
  const rawDirs = new Set<string>();
  const kept = new FirstByName(limit);
  await readTarEntries(archive, async (entry) => {
    const segments = entry.name.split('/');
    if (segments.some((s) => s.startsWith('.'))) return;
    if (entry.type === 'directory') {
      rawDirs.add(entry.name);
    } else if (entry.type === 'file' && isImageName(leafOf(entry.name)) && segments.length >= 2) {
      for (let i = 1; i < segments.length; i++) rawDirs.add(segments.slice(0, i).join('/'));
      const bytes = await entry.read();
      kept.add({ path: entry.name, where: { file: archive, entry: entry.name }, load: async () => bytes });
    }
  });
  const images = kept.all();
  const prefix = commonPrefix(
    images.map((ref) => ref.path),
    names.train,
    names.test,
  );
  const prefixPath = prefix.join('/');
  const cut = prefix.length === 0 ? 0 : prefixPath.length + 1;
  const dirs = new Set<string>();
  for (const dir of rawDirs) if (cut === 0 || dir.startsWith(`${prefixPath}/`)) dirs.add(dir.slice(cut));
  dirs.delete('');
  return {
    dirs,
    images: images.map((ref) => ({ ...ref, path: ref.path.slice(cut) })),
    describe: (relDir) => {
      const entry = [...prefix, ...(relDir === '' ? [] : [relDir])].join('/');
      return entry === '' ? { file: archive } : { file: archive, entry: `${entry}/` };
    },
  };
}

interface Plan {
  classes: string[];
  train: ImageRef[];
  test?: ImageRef[];
}

function locationError(where: Location, problem: string, cause?: unknown): DataError {
  return new DataError(where.file, problem, {
    ...(where.entry === undefined ? {} : { entry: where.entry }),
    ...(cause === undefined ? {} : { cause }),
  });
}

/** Maps a listing onto train/test subsets and classes, checking the layout. */
function planLayout(listing: Listing, source: ImageFolderSource): Plan {
  const trainName = source.train ?? 'train';
  const testName = source.test ?? 'test';
  const hasSplits = listing.dirs.has(trainName);
  if (!hasSplits && source.train !== undefined) {
    throw locationError(listing.describe(''), `no training folder "${trainName}"`);
  }
  if (hasSplits && source.test !== undefined && !listing.dirs.has(testName)) {
    throw locationError(listing.describe(''), `no test folder "${testName}"`);
  }

  const collect = (splitDir: string | undefined): Map<string, ImageRef[]> => {
    const byClass = new Map<string, ImageRef[]>();
    const classDepth = splitDir === undefined ? 1 : 2;
    for (const dir of listing.dirs) {
      const segs = dir.split('/');
      if (segs.length === classDepth && (splitDir === undefined || segs[0] === splitDir)) {
        byClass.set(segs[classDepth - 1]!, []);
      }
    }
    for (const ref of listing.images) {
      const segs = ref.path.split('/');
      if (segs.length !== classDepth + 1) continue;
      if (splitDir !== undefined && segs[0] !== splitDir) continue;
      const cls = segs[classDepth - 1]!;
      const list = byClass.get(cls) ?? [];
      list.push(ref);
      byClass.set(cls, list);
    }
    for (const [cls, refs] of byClass) {
      if (refs.length === 0) {
        const dir = splitDir === undefined ? cls : `${splitDir}/${cls}`;
        throw locationError(
          listing.describe(dir),
          `empty class folder "${cls}": no ${IMAGE_EXTENSIONS.join(', ')} files`,
        );
      }
      refs.sort((a, b) => byName(a.path, b.path));
    }
    return byClass;
  };

  const train = collect(hasSplits ? trainName : undefined);
  const classes = [...train.keys()].sort(byName);
  if (classes.length < 2) {
    throw locationError(
      listing.describe(hasSplits ? trainName : ''),
      `found ${classes.length} class folder(s)${classes.length === 1 ? ` ("${classes[0]}")` : ''}; need at least 2`,
    );
  }
  const ordered = (byClass: Map<string, ImageRef[]>): ImageRef[] => classes.flatMap((cls) => byClass.get(cls) ?? []);
  const plan: Plan = { classes, train: ordered(train) };
  if (hasSplits && listing.dirs.has(testName)) {
    const test = collect(testName);
    for (const cls of test.keys()) {
      if (!classes.includes(cls)) {
        throw locationError(listing.describe(`${testName}/${cls}`), `test class "${cls}" has no training folder`);
      }
    }
    plan.test = ordered(test);
  }
  return plan;
}

interface Decoded {
  data: Buffer;
  height: number;
  width: number;
}

async function decodeImage(
  ref: ImageRef,
  bytes: Buffer,
  options: { channels: 1 | 3; size?: [number, number] },
): Promise<Decoded> {
  try {
    // failOn 'truncated' rejects cut-off files but tolerates the benign warnings many real JPEGs carry.
    let image = sharp(bytes, { failOn: 'truncated', autoOrient: true });
    if (options.size !== undefined) {
      // Cover + centre: scale to fill the target and crop the overflow, keeping the aspect ratio
      // (the usual centre-crop evaluation transform) instead of distorting the objects.
      image = image.resize({ height: options.size[0], width: options.size[1], fit: 'cover', position: 'centre' });
    }
    image = options.channels === 1 ? image.greyscale() : image.toColourspace('srgb');
    const { data, info } = await image.removeAlpha().raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
    if (info.channels !== options.channels) {
      throw new Error(`decoded to ${info.channels} channels, expected ${options.channels}`);
    }
    return { data, height: info.height, width: info.width };
  } catch (error) {
    throw locationError(ref.where, `unreadable or truncated image: ${describeError(error)}`, error);
  }
}

async function runPool(count: number, concurrency: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (!failed && next < count) {
      const i = next++;
      try {
        await task(i);
      } catch (error) {
        failed = true;
        throw error;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, count)) }, worker));
}

function displayName(path: string): string {
  return basename(path).replace(/\.(tar\.gz|tgz|tar)$/i, '');
}

/**
 * Reads `<root>/<train>/<class>/*.{jpg,jpeg,png}` (and `<root>/<test>/<class>/...`), or
 * `<root>/<class>/...` as training data when there is no train folder, from a folder or a
 * .tar/.tar.gz streamed in memory. Classes are the training class folders sorted by name; images
 * within a class are ordered by file name. Every image is decoded to `channels` and brought to
 * `imageSize` ([height, width]) by scaling and centre-cropping; without `imageSize`, the size of
 * the first image is used.
 */
export async function readImageFolder(
  source: ImageFolderSource,
  options: ReadImageFolderOptions = {},
): Promise<Dataset> {
  const channels = source.channels ?? 3;
  const limit = source.limitPerClass;
  if (limit !== undefined && (!Number.isInteger(limit) || limit < 1)) {
    throw new DataError(source.path, `limitPerClass must be a positive integer, got ${limit}`);
  }
  if (source.imageSize !== undefined && !source.imageSize.every((n) => Number.isInteger(n) && n > 0)) {
    throw new DataError(source.path, `imageSize must be two positive integers, got [${source.imageSize.join(', ')}]`);
  }
  let info;
  try {
    info = await stat(source.path);
  } catch (error) {
    throw new DataError(source.path, `cannot open image folder or archive: ${describeError(error)}`, { cause: error });
  }
  const listing = info.isDirectory()
    ? await listFolder(source.path, limit, options.roots)
    : await listArchive(source.path, limit, { train: source.train ?? 'train', test: source.test ?? 'test' });
  const plan = planLayout(listing, source);

  const first = plan.train[0]!;
  const size: [number, number] =
    source.imageSize ?? (await decodeImage(first, await first.load(), { channels }).then((d) => [d.height, d.width]));
  const shape: ImageShape = [size[0], size[1], channels];
  const perImage = bytesPerImage(shape);
  const resizeAlways = source.imageSize !== undefined;

  const subsets: { refs: ImageRef[]; subset: Subset }[] = [plan.train, ...(plan.test ? [plan.test] : [])].map(
    (refs) => ({
      refs,
      subset: {
        count: refs.length,
        pixels: new Uint8Array(refs.length * perImage),
        labels: new Int32Array(refs.length),
      },
    }),
  );
  const classIndex = new Map(plan.classes.map((cls, i) => [cls, i]));
  const jobs = subsets.flatMap(({ refs, subset }) => refs.map((ref, i) => ({ ref, subset, i })));
  let done = 0;
  await runPool(jobs.length, options.concurrency ?? DEFAULT_DECODE_CONCURRENCY, async (j) => {
    const { ref, subset, i } = jobs[j]!;
    const bytes = await ref.load();
    let decoded = await decodeImage(ref, bytes, resizeAlways ? { channels, size } : { channels });
    if (decoded.height !== size[0] || decoded.width !== size[1]) {
      decoded = await decodeImage(ref, bytes, { channels, size });
    }
    subset.pixels.set(decoded.data, i * perImage);
    const segs = ref.path.split('/');
    subset.labels[i] = classIndex.get(segs[segs.length - 2]!)!;
    done++;
    options.onProgress?.({ done, total: jobs.length });
  });

  const dataset: Dataset = {
    name: displayName(source.path),
    classes: plan.classes,
    shape,
    train: subsets[0]!.subset,
    source: source.path,
  };
  if (subsets[1] !== undefined) dataset.test = subsets[1].subset;
  return dataset;
}
