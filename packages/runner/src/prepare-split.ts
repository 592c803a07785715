import { readFile, stat } from 'node:fs/promises';
import { isAbsolute, resolve } from 'node:path';
import {
  type ClassGroups,
  type Dataset,
  type DatasetSource,
  type SplitManifest,
  type SplitSpec,
  DataError,
  confinePath,
  datasetCacheKey,
  datasetFingerprint,
  fetchDataset,
  isFetchableDataset,
  manifestKey,
  openSplit,
  parseGroupsYaml,
  planSplit,
  readDataset,
  readDatasetCache,
  writeDatasetCache,
  writeSplit,
} from '@transferlab/data';
import type { SplitTask, SweepDataset } from '@transferlab/experiment';
import type { ObjectStore } from '@transferlab/platform';
import { getJson, putJson } from './cell-store.ts';

/** Where catalog datasets live unless told otherwise: `TRANSFERLAB_DATA_DIR`, else `.transferlab/data`. */
export function defaultDataDir(): string {
  return resolve(process.env.TRANSFERLAB_DATA_DIR ?? '.transferlab/data');
}

/**
 * The spec's dataset as a reader source, its relative paths resolved against the spec's folder.
 * A catalog dataset is fetched into `dataDir` first when it is not there yet (each file checked
 * against its pinned sha256).
 */
export async function datasetSource(
  dataset: SweepDataset,
  specDir: string,
  dataDir: string = defaultDataDir(),
): Promise<DatasetSource> {
  const at = (path: string): string => (isAbsolute(path) ? path : resolve(specDir, path));
  switch (dataset.kind) {
    case 'mnist':
      return { kind: 'mnist' };
    case 'catalog':
      if (!isFetchableDataset(dataset.name)) throw new Error(`dataset.name: '${dataset.name}' is not in the catalog`);
      return fetchDataset(dataset.name, { dir: dataDir });
    case 'idx':
      return {
        kind: 'idx',
        trainImages: at(dataset.trainImages),
        trainLabels: at(dataset.trainLabels),
        testImages: dataset.testImages === undefined ? undefined : at(dataset.testImages),
        testLabels: dataset.testLabels === undefined ? undefined : at(dataset.testLabels),
        classes: dataset.classes,
      };
    case 'cifar10':
      return { kind: 'cifar10', path: at(dataset.path) };
    case 'cifar100':
      return { kind: 'cifar100', path: at(dataset.path), labels: dataset.labels };
    case 'image-folder':
      return {
        kind: 'image-folder',
        path: at(dataset.path),
        train: dataset.train,
        test: dataset.test,
        imageSize: dataset.imageSize,
        channels: dataset.channels,
        limitPerClass: dataset.limitPerClass,
      };
  }
}

/** Groups may name classes or give label indices; the data layer works with names. */
function groupsByName(groups: { A?: (string | number)[]; B?: (string | number)[] }, classes: string[]): ClassGroups {
  const name = (ref: string | number): string => (typeof ref === 'number' ? (classes[ref] ?? `#${ref}`) : ref);
  return { A: (groups.A ?? []).map(name), B: (groups.B ?? []).map(name) };
}

/** The dataset's file paths with the spec's field that names each, for messages and confinement. */
function sourcePaths(source: DatasetSource): { field: string; key: string; path: string }[] {
  const fields: Record<string, string> = {
    trainImages: 'dataset.trainImages',
    trainLabels: 'dataset.trainLabels',
    testImages: 'dataset.testImages',
    testLabels: 'dataset.testLabels',
    path: 'dataset.path',
  };
  return Object.entries(fields).flatMap(([key, field]) => {
    const path = (source as unknown as Record<string, unknown>)[key];
    return typeof path === 'string' ? [{ field, key, path }] : [];
  });
}

/**
 * The source with every path confined to the data roots and resolved through its links
 * (PathOutsideRootsError naming the field otherwise): what a server reads for a request.
 */
export async function confineSource(source: DatasetSource, roots: readonly string[]): Promise<DatasetSource> {
  const confined: Record<string, unknown> = { ...source };
  for (const { field, key, path } of sourcePaths(source)) confined[key] = await confinePath(path, roots, field);
  return confined as DatasetSource;
}

/** A groups file is a few class names: anything larger is not one, and is not read. */
const MAX_GROUPS_FILE_BYTES = 1024 * 1024;

async function readGroupsFile(file: string): Promise<string> {
  const size = (await stat(file)).size;
  if (size > MAX_GROUPS_FILE_BYTES) {
    throw new DataError(file, `is ${size} bytes; a groups file has at most ${MAX_GROUPS_FILE_BYTES}`);
  }
  return readFile(file, 'utf8');
}

async function splitSpecOf(
  task: SplitTask,
  dataset: Dataset,
  specDir: string,
  roots?: readonly string[],
): Promise<SplitSpec> {
  const caps = {
    trainPerClass: task.split.trainPerClass,
    valPerClass: task.split.valPerClass,
    testPerClass: task.split.testPerClass,
  };
  if (task.split.kind === 'random') return { kind: 'random', seed: task.seed, caps };
  let groups: ClassGroups;
  if (task.split.groupsFile !== undefined) {
    const file =
      roots === undefined
        ? isAbsolute(task.split.groupsFile)
          ? task.split.groupsFile
          : resolve(specDir, task.split.groupsFile)
        : await confinePath(task.split.groupsFile, roots, 'split.groupsFile');
    groups = parseGroupsYaml(await readGroupsFile(file), file);
  } else {
    groups = groupsByName(task.split.groups ?? {}, dataset.classes);
  }
  return { kind: 'groups', groups, seed: task.seed, caps };
}

/**
 * The dataset from its shard cache in the store when there is one (`transferlab data fetch`
 * writes it; so does the first split of an image folder, whose JPEG decoding dominates), else
 * from the reader.
 */
export async function readCachedDataset(
  store: ObjectStore,
  source: DatasetSource,
  onProgress?: (progress: { done: number; total: number }) => void,
  roots?: readonly string[],
  fingerprint?: string,
): Promise<Dataset> {
  // The cache of an image folder (written below) is keyed by its files too: an edited folder is
  // decoded again, never served from the old cache. `data fetch` writes the others unkeyed.
  const key = datasetCacheKey(source.kind === 'image-folder' && fingerprint ? { ...source, fingerprint } : source);
  const cached = await readDatasetCache(store, key);
  if (cached) return cached;
  const dataset = await readDataset(source, { onProgress, ...(roots === undefined ? {} : { roots }) });
  if (source.kind === 'image-folder') await writeDatasetCache(store, key, dataset);
  return dataset;
}

export interface EnsureSplitsOptions {
  specDir: string;
  /** Where catalog datasets are fetched to; default defaultDataDir(). */
  dataDir?: string;
  /**
   * A server's data roots (TRANSFERLAB_DATA_ROOT): every dataset path and groups file must lie
   * inside one of them, links resolved. Unset on the CLI, which reads whatever its user names.
   */
  dataRoots?: readonly string[];
  onReading?: (task: SplitTask, progress: { done: number; total: number }) => void;
  onWriting?: (task: SplitTask, progress: { images: number; totalImages: number }) => void;
}

/**
 * Makes every split of a sweep that the store does not hold yet. The dataset is read once
 * for all splits that share it (repeats of a random split), and not at all when every split
 * exists: a second run of the same sweep touches no images.
 */
export async function ensureSplits(
  store: ObjectStore,
  tasks: readonly SplitTask[],
  options: EnsureSplitsOptions,
): Promise<Map<string, SplitManifest>> {
  const manifests = new Map<string, SplitManifest>();
  const datasets = new Map<string, Dataset>();
  for (const task of tasks) {
    const roots = options.dataRoots;
    const written = await datasetSource(task.dataset, options.specDir, options.dataDir);
    const source = roots === undefined ? written : await confineSource(written, roots);
    const fingerprint = await splitFingerprint(task.dataset, source);
    if (await store.stat(manifestKey(task.id))) {
      await checkFingerprint(store, task, source, fingerprint);
      manifests.set(task.id, (await openSplit(store, task.id)).manifest);
      continue;
    }
    const sourceKey = JSON.stringify(source);
    let dataset = datasets.get(sourceKey);
    if (!dataset) {
      dataset = await readCachedDataset(
        store,
        source,
        (progress) => options.onReading?.(task, progress),
        roots,
        fingerprint,
      );
      datasets.set(sourceKey, dataset);
    }
    const plan = planSplit(dataset.classes, await splitSpecOf(task, dataset, options.specDir, roots));
    const manifest = await writeSplit(store, dataset, {
      splitId: task.id,
      plan,
      onProgress: (progress) => options.onWriting?.(task, progress),
    });
    if (fingerprint !== undefined)
      await putJson(store, fingerprintKey(task.id), { fingerprint } satisfies StoredFingerprint);
    manifests.set(task.id, manifest);
  }
  return manifests;
}

/**
 * What a split remembers of its dataset's files. None for a catalog dataset: its files are checked
 * against the catalog's pinned sha256 when fetched, and each clone or data folder imports its own
 * copy (new times, new path), which a listing would take for an edit and refuse a resumed sweep.
 */
async function splitFingerprint(dataset: SweepDataset, source: DatasetSource): Promise<string | undefined> {
  return dataset.kind === 'catalog' ? undefined : datasetFingerprint(source);
}

/** What the dataset's files were when the split was made (datasetFingerprint). */
export function fingerprintKey(splitId: string): string {
  return `splits/${splitId}/dataset-fingerprint.json`;
}

interface StoredFingerprint {
  fingerprint: string;
}

/** For a server that found the split in the store: DataError if its dataset changed since. */
export async function checkSplitData(
  store: ObjectStore,
  task: SplitTask,
  options: { specDir: string; dataDir?: string; dataRoots?: readonly string[] },
): Promise<void> {
  const written = await datasetSource(task.dataset, options.specDir, options.dataDir);
  const source = options.dataRoots === undefined ? written : await confineSource(written, options.dataRoots);
  await checkFingerprint(store, task, source, await splitFingerprint(task.dataset, source));
}

/**
 * A split made from files that have changed since is refused, loudly: serving it would train on
 * the old data under the new data's name (issue 9). The split id covers the dataset as written
 * in the spec, not its content (see docs/reliability.md), so the remedy is a new id for it.
 */
async function checkFingerprint(
  store: ObjectStore,
  task: SplitTask,
  source: DatasetSource,
  fingerprint: string | undefined,
): Promise<void> {
  const stored = await getJson<StoredFingerprint>(store, fingerprintKey(task.id));
  if (stored === undefined || fingerprint === undefined || stored.fingerprint === fingerprint) return;
  const where = 'path' in source ? source.path : source.kind === 'idx' ? source.trainImages : source.kind;
  throw new DataError(
    where,
    `has changed since split ${task.id} was made from it (files added, removed or modified): its cells ` +
      'would train and be scored on the old data. Use a fresh --store, or give the edited dataset a new path',
  );
}
