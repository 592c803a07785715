import { CIFAR10_CLASSES, CIFAR100_FINE_CLASSES } from './readers/cifar.ts';
import { FASHION_MNIST_CLASSES, MNIST_CLASSES } from './readers/idx.ts';

export type FetchableDataset = 'cifar10' | 'cifar10-jpg' | 'cifar100' | 'mnist' | 'fashion-mnist';

export const FETCHABLE_DATASETS: readonly FetchableDataset[] = [
  'cifar10',
  'cifar10-jpg',
  'cifar100',
  'mnist',
  'fashion-mnist',
];

export type IdxRole = 'trainImages' | 'trainLabels' | 'testImages' | 'testLabels';

export interface CatalogFile {
  /** File name on disk and, appended to a base URL, on the server. */
  name: string;
  /**
   * Base URLs tried in order (each ends with '/'): the publisher's first, then mirrors serving the
   * same bytes. The pinned sha256 is what makes a mirror trustworthy. Empty: no address is
   * known, and a copy must be imported (`data fetch NAME --from FILE`).
   */
  baseUrls: string[];
  /** Pinned sha256 of the publisher's file; undefined means unknown, and fetching it needs an explicit opt-out. */
  sha256: string | undefined;
  /** For IDX datasets: which array this file holds. */
  role?: IdxRole;
}

export interface CatalogEntry {
  name: FetchableDataset;
  title: string;
  homepage: string;
  /** How the downloaded files become a DatasetSource. */
  layout: 'cifar10-archive' | 'cifar100-archive' | 'idx' | 'image-folder-archive';
  /** image-folder-archive: the size every image has, [height, width, channels]. */
  imageShape?: [number, number, 1 | 3];
  classes: string[];
  files: CatalogFile[];
}

// The sha256 values below were each found identical in several independent projects' pinned
// checksums, and next to the publishers' own MD5 sums; the sizes in bytes are for reference.
const CIFAR_BASE = 'https://www.cs.toronto.edu/~kriz/';
const MNIST_BASES = [
  'https://yann.lecun.com/exdb/mnist/',
  // The publisher's site has been refusing downloads at times; these mirrors serve identical files.
  'https://ossci-datasets.s3.amazonaws.com/mnist/',
  'https://storage.googleapis.com/cvdf-datasets/mnist/',
];
const FASHION_BASES = [
  'http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/',
  'https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/',
];

function idxFiles(bases: string[], sums: Record<IdxRole, string>): CatalogFile[] {
  const names: Record<IdxRole, string> = {
    trainImages: 'train-images-idx3-ubyte.gz',
    trainLabels: 'train-labels-idx1-ubyte.gz',
    testImages: 't10k-images-idx3-ubyte.gz',
    testLabels: 't10k-labels-idx1-ubyte.gz',
  };
  return (Object.keys(names) as IdxRole[]).map((role) => ({
    name: names[role],
    baseUrls: bases,
    sha256: sums[role],
    role,
  }));
}

export const CATALOG: Readonly<Record<FetchableDataset, CatalogEntry>> = {
  cifar10: {
    name: 'cifar10',
    title: 'CIFAR-10 (binary version)',
    homepage: 'https://www.cs.toronto.edu/~kriz/cifar.html',
    layout: 'cifar10-archive',
    classes: CIFAR10_CLASSES,
    files: [
      {
        // 170,052,171 bytes; md5 c32a1d4ab5d03f1284b67883e8d87530
        name: 'cifar-10-binary.tar.gz',
        baseUrls: [CIFAR_BASE],
        sha256: 'c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd',
      },
    ],
  },
  'cifar10-jpg': {
    name: 'cifar10-jpg',
    title: 'CIFAR-10, re-encoded as JPEG in class folders (train/<class>/, test/<class>/)',
    homepage: 'https://www.cs.toronto.edu/~kriz/cifar.html',
    layout: 'image-folder-archive',
    imageShape: [32, 32, 3],
    classes: CIFAR10_CLASSES,
    files: [
      {
        // 19,642,801 bytes. A public mirror's re-encoding (JPEG quality about 75): pixels are
        // close to, not equal to, the binary release's. No address is pinned here.
        name: 'cifar10-jpg.tar.gz',
        baseUrls: [],
        sha256: 'c39db14690feee235e4f88817d1caff0707fb1d9ac3ad6f76efe99d56eafb5a2',
      },
    ],
  },
  cifar100: {
    name: 'cifar100',
    title: 'CIFAR-100 (binary version)',
    homepage: 'https://www.cs.toronto.edu/~kriz/cifar.html',
    layout: 'cifar100-archive',
    // Fine labels by default; the source returned by fetchDataset can ask for the 20 coarse ones.
    classes: CIFAR100_FINE_CLASSES,
    files: [
      {
        // md5 03b5dce01913d631647c71ecec9e9cb8
        name: 'cifar-100-binary.tar.gz',
        baseUrls: [CIFAR_BASE],
        sha256: '58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec',
      },
    ],
  },
  mnist: {
    name: 'mnist',
    title: 'MNIST handwritten digits',
    homepage: 'http://yann.lecun.com/exdb/mnist/',
    layout: 'idx',
    classes: MNIST_CLASSES,
    // 9,912,422 / 28,881 / 1,648,877 / 4,542 bytes
    files: idxFiles(MNIST_BASES, {
      trainImages: '440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609',
      trainLabels: '3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c',
      testImages: '8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6',
      testLabels: 'f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6',
    }),
  },
  'fashion-mnist': {
    name: 'fashion-mnist',
    title: 'Fashion-MNIST (Zalando)',
    homepage: 'https://github.com/zalandoresearch/fashion-mnist',
    layout: 'idx',
    classes: FASHION_MNIST_CLASSES,
    // 26,421,880 / 29,515 / 4,422,102 / 5,148 bytes. The .gz files of Debian's
    // dataset-fashion-mnist package are compressed differently and do not match these sums.
    files: idxFiles(FASHION_BASES, {
      trainImages: '3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84',
      trainLabels: 'a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845',
      testImages: '346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073',
      testLabels: '67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5',
    }),
  },
};

export function isFetchableDataset(name: string): name is FetchableDataset {
  return (FETCHABLE_DATASETS as readonly string[]).includes(name);
}
