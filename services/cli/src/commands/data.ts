import { resolve } from 'node:path';
import cliProgress from 'cli-progress';
import { LocalFolderStore } from '@transferlab/platform';
import {
  type FetchableDataset,
  FETCHABLE_DATASETS,
  datasetCacheKey,
  fetchDataset,
  isFetchableDataset,
  readDataset,
  writeDatasetCache,
} from '@transferlab/data';

export interface FetchCommandOptions {
  dir: string;
  /** The store that receives the dataset in the shard format. */
  store: string;
  baseUrl?: string;
  insecureSkipChecksum?: boolean;
  from?: string;
}

/**
 * `transferlab data fetch NAME`: download, verify, unpack, read it once (which proves it whole)
 * and convert it to the shard format in the store, where every sweep's splits read it.
 */
export async function fetchCommand(name: string, options: FetchCommandOptions): Promise<number> {
  if (!isFetchableDataset(name)) {
    console.error(`unknown dataset '${name}': expected one of ${FETCHABLE_DATASETS.join(', ')}`);
    return 2;
  }
  const bar = new cliProgress.SingleBar(
    { format: ' {file} |{bar}| {percentage}% | {value}/{total} bytes | ETA {eta_formatted}', hideCursor: true },
    cliProgress.Presets.shades_classic,
  );
  let current = '';
  const source = await fetchDataset(name as FetchableDataset, {
    dir: resolve(options.dir),
    baseUrl: options.baseUrl,
    insecureSkipChecksum: options.insecureSkipChecksum,
    ...(options.from === undefined ? {} : { from: resolve(options.from) }),
    onProgress: (p) => {
      if (p.file !== current) {
        if (current) bar.stop();
        current = p.file;
        bar.start(p.total ?? 0, p.bytes, { file: p.file });
      }
      bar.update(p.bytes);
    },
  }).finally(() => bar.stop());
  const dataset = await readDataset(source);
  const store = new LocalFolderStore(resolve(options.store));
  const key = datasetCacheKey(source);
  await writeDatasetCache(store, key, dataset);
  console.log(
    `${name}: ${dataset.classes.length} classes, ${dataset.train.count} train and ${dataset.test?.count ?? 0} test images of ` +
      `${dataset.shape.join('x')}; shards in ${store.describe(key)}; in a sweep spec: dataset: { kind: catalog, name: ${name} }`,
  );
  return 0;
}
