import { resolve } from 'node:path';
import cliProgress from 'cli-progress';
import {
  type FetchableDataset,
  FETCHABLE_DATASETS,
  fetchDataset,
  isFetchableDataset,
  readDataset,
} from '@transferlab/data';

export interface FetchCommandOptions {
  dir: string;
  baseUrl?: string;
  insecureSkipChecksum?: boolean;
}

/** `transferlab data fetch NAME`: download, verify, unpack, then read it once to prove it whole. */
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
  console.log(
    `${name}: ${dataset.classes.length} classes, ${dataset.train.count} train and ${dataset.test?.count ?? 0} test images of ` +
      `${dataset.shape.join('x')}; dataset source for a sweep spec:\n${JSON.stringify(source, null, 2)}`,
  );
  return 0;
}
