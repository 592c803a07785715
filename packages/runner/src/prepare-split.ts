import { readFile } from 'node:fs/promises';
import { isAbsolute, resolve } from 'node:path';
import {
  type ClassGroups,
  type Dataset,
  type DatasetSource,
  type SplitManifest,
  type SplitSpec,
  datasetCacheKey,
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

async function splitSpecOf(task: SplitTask, dataset: Dataset, specDir: string): Promise<SplitSpec> {
  const caps = {
    trainPerClass: task.split.trainPerClass,
    valPerClass: task.split.valPerClass,
    testPerClass: task.split.testPerClass,
  };
  if (task.split.kind === 'random') return { kind: 'random', seed: task.seed, caps };
  let groups: ClassGroups;
  if (task.split.groupsFile !== undefined) {
    const file = isAbsolute(task.split.groupsFile) ? task.split.groupsFile : resolve(specDir, task.split.groupsFile);
    groups = parseGroupsYaml(await readFile(file, 'utf8'), file);
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
): Promise<Dataset> {
  const key = datasetCacheKey(source);
  const cached = await readDatasetCache(store, key);
  if (cached) return cached;
  const dataset = await readDataset(source, { onProgress });
  if (source.kind === 'image-folder') await writeDatasetCache(store, key, dataset);
  return dataset;
}

export interface EnsureSplitsOptions {
  specDir: string;
  /** Where catalog datasets are fetched to; default defaultDataDir(). */
  dataDir?: string;
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
    if (await store.stat(manifestKey(task.id))) {
      manifests.set(task.id, (await openSplit(store, task.id)).manifest);
      continue;
    }
    const source = await datasetSource(task.dataset, options.specDir, options.dataDir);
    const sourceKey = JSON.stringify(source);
    let dataset = datasets.get(sourceKey);
    if (!dataset) {
      dataset = await readCachedDataset(store, source, (progress) => options.onReading?.(task, progress));
      datasets.set(sourceKey, dataset);
    }
    const plan = planSplit(dataset.classes, await splitSpecOf(task, dataset, options.specDir));
    const manifest = await writeSplit(store, dataset, {
      splitId: task.id,
      plan,
      onProgress: (progress) => options.onWriting?.(task, progress),
    });
    manifests.set(task.id, manifest);
  }
  return manifests;
}
