import type { Dataset, DatasetSource } from '../dataset.ts';
import { readCifar10, readCifar100 } from './cifar.ts';
import { readIdx, mnistPackageSource } from './idx.ts';
import type { ReadImageFolderOptions } from './image-folder.ts';
import { readImageFolder } from './image-folder.ts';

export type ReadDatasetOptions = ReadImageFolderOptions;

/** Reads any dataset source into memory; the options only matter for image folders. */
export async function readDataset(source: DatasetSource, options: ReadDatasetOptions = {}): Promise<Dataset> {
  switch (source.kind) {
    case 'idx':
      return readIdx(source);
    case 'mnist':
      return readIdx(mnistPackageSource(), 'mnist');
    case 'cifar10':
      return readCifar10(source, options);
    case 'cifar100':
      return readCifar100(source, options);
    case 'image-folder':
      return readImageFolder(source, options);
  }
}

export {
  readCifar10,
  readCifar100,
  parseCifarRecords,
  CIFAR10_CLASSES,
  CIFAR100_FINE_CLASSES,
  CIFAR100_COARSE_CLASSES,
} from './cifar.ts';
export { readIdx, readIdxFile, parseIdx, mnistPackageSource, MNIST_CLASSES, FASHION_MNIST_CLASSES } from './idx.ts';
export type { IdxArray } from './idx.ts';
export { readImageFolder } from './image-folder.ts';
export type { ImageFolderSource, ImageFolderProgress, ReadImageFolderOptions } from './image-folder.ts';
