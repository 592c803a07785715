import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import sharp from 'sharp';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { TarInput } from '../archive.ts';
import { writeTar } from '../archive.ts';
import type { Dataset } from '../dataset.ts';
import { DataError } from '../errors.ts';
import { readImageFolder } from './image-folder.ts';
import { readDataset } from './index.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'transferlab-imgfolder-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

type Rgb = [number, number, number];

async function solid(rgb: Rgb, format: 'png' | 'jpeg', size: [number, number] = [6, 8]): Promise<Buffer> {
  const image = sharp({
    create: { width: size[1], height: size[0], channels: 3, background: { r: rgb[0], g: rgb[1], b: rgb[2] } },
  });
  return format === 'png' ? image.png().toBuffer() : image.jpeg({ quality: 95 }).toBuffer();
}

/** Raw RGB rows -> PNG, for images whose every pixel matters. */
async function pngOf(width: number, height: number, rgbAt: (y: number, x: number) => Rgb): Promise<Buffer> {
  const raw = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) raw.set(rgbAt(y, x), (y * width + x) * 3);
  return sharp(raw, { raw: { width, height, channels: 3 } })
    .png()
    .toBuffer();
}

async function writeFiles(root: string, files: Record<string, Buffer | string>): Promise<void> {
  for (const [rel, data] of Object.entries(files)) {
    await mkdir(dirname(join(root, rel)), { recursive: true });
    await writeFile(join(root, rel), data);
  }
}

function tarEntries(files: Record<string, Buffer | string>, prefix = ''): TarInput[] {
  return Object.entries(files).map(([name, data]) => ({ name: prefix + name, data }));
}

const RED: Rgb = [220, 20, 30];
const GREEN: Rgb = [10, 200, 40];
const BLUE: Rgb = [20, 40, 210];

/** Three classes written out of order, PNG and JPEG, with a test split and some noise to ignore. */
async function splitLayout(): Promise<Record<string, Buffer | string>> {
  return {
    'train/zebra/b.png': await solid(BLUE, 'png'),
    'train/zebra/a.PNG': await solid(GREEN, 'png'),
    'train/apple/1.jpg': await solid(RED, 'jpeg'),
    'train/apple/2.jpeg': await solid(RED, 'jpeg'),
    'train/apple/notes.txt': 'not an image',
    'train/mango/only.png': await solid(GREEN, 'png'),
    'test/apple/t.png': await solid(RED, 'png'),
    'test/zebra/t.png': await solid(BLUE, 'png'),
    'README.md': 'ignored',
  };
}

function pixelAt(ds: Dataset, subset: 'train' | 'test', index: number, y = 0, x = 0): number[] {
  const [h, w, c] = ds.shape;
  const base = index * h * w * c + (y * w + x) * c;
  return [...ds[subset]!.pixels.subarray(base, base + c)];
}

function expectNear(actual: number[], expected: number[], tolerance: number): void {
  actual.forEach((v, i) => expect(Math.abs(v - expected[i]!)).toBeLessThanOrEqual(tolerance));
}

async function caught(promise: Promise<unknown>): Promise<DataError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(DataError);
  return error as DataError;
}

function expectSplitLayout(ds: Dataset): void {
  expect(ds.classes).toEqual(['apple', 'mango', 'zebra']);
  expect(ds.shape).toEqual([6, 8, 3]);
  expect(ds.train.count).toBe(5);
  expect([...ds.train.labels]).toEqual([0, 0, 1, 2, 2]);
  expectNear(pixelAt(ds, 'train', 0), RED, 8);
  expectNear(pixelAt(ds, 'train', 1, 5, 7), RED, 8);
  expect(pixelAt(ds, 'train', 2)).toEqual(GREEN);
  // Within a class, file-name order: 'a.PNG' before 'b.png'.
  expect(pixelAt(ds, 'train', 3)).toEqual(GREEN);
  expect(pixelAt(ds, 'train', 4, 5, 7)).toEqual(BLUE);
  expect(ds.test?.count).toBe(2);
  expect([...ds.test!.labels]).toEqual([0, 2]);
  expect(pixelAt(ds, 'test', 1)).toEqual(BLUE);
}

describe('image folder', () => {
  it('reads <root>/train|test/<class>/*.{jpg,jpeg,png} from a folder', async () => {
    const root = join(dir, 'ds');
    await writeFiles(root, await splitLayout());
    const ds = await readImageFolder({ kind: 'image-folder', path: root });
    expectSplitLayout(ds);
    expect(ds.name).toBe('ds');
  });

  for (const gzip of [true, false]) {
    it(`reads the same from a ${gzip ? '.tar.gz' : '.tar'}, with or without a wrapping folder`, async () => {
      const files = await splitLayout();
      const plain = join(dir, gzip ? 'plain.tar.gz' : 'plain.tar');
      await writeTar(plain, tarEntries(files), { gzip });
      expectSplitLayout(await readImageFolder({ kind: 'image-folder', path: plain }));
      const wrapped = join(dir, gzip ? 'wrapped.tgz' : 'wrapped.tar');
      await writeTar(wrapped, [{ name: 'my-data/' }, ...tarEntries(files, 'my-data/')], { gzip });
      expectSplitLayout(await readDataset({ kind: 'image-folder', path: wrapped }));
    });
  }

  it('treats <root>/<class>/ as training data when there is no train folder', async () => {
    const root = join(dir, 'flat');
    await writeFiles(root, {
      'dogs/1.png': await solid(RED, 'png'),
      'cats/1.png': await solid(BLUE, 'png'),
      'cats/2.png': await solid(BLUE, 'png'),
    });
    const ds = await readImageFolder({ kind: 'image-folder', path: root });
    expect(ds.classes).toEqual(['cats', 'dogs']);
    expect([...ds.train.labels]).toEqual([0, 0, 1]);
    expect(ds.test).toBeUndefined();
    const archive = join(dir, 'flat.tar.gz');
    await writeTar(
      archive,
      tarEntries({ 'cats/1.png': await solid(BLUE, 'png'), 'dogs/1.png': await solid(RED, 'png') }, 'x/'),
      {
        gzip: true,
      },
    );
    expect((await readImageFolder({ kind: 'image-folder', path: archive })).classes).toEqual(['cats', 'dogs']);
  });

  it('honours custom train and test folder names', async () => {
    const root = join(dir, 'custom');
    await writeFiles(root, {
      'fit/a/1.png': await solid(RED, 'png'),
      'fit/b/1.png': await solid(BLUE, 'png'),
      'val/a/1.png': await solid(RED, 'png'),
      'test/a/1.png': await solid(RED, 'png'),
      'test/a/2.png': await solid(RED, 'png'),
    });
    const ds = await readImageFolder({ kind: 'image-folder', path: root, train: 'fit', test: 'val' });
    expect(ds.train.count).toBe(2);
    expect(ds.test?.count).toBe(1);
    await expect(readImageFolder({ kind: 'image-folder', path: root, train: 'missing' })).rejects.toThrow(
      /no training folder "missing"/,
    );
  });

  it('resizes to imageSize by scaling and centre-cropping (aspect ratio kept)', async () => {
    // 20 wide x 10 high: green 5-px margins left and right, red then blue in the middle.
    const banded = await pngOf(20, 10, (_y, x) => (x < 5 || x >= 15 ? GREEN : x < 10 ? RED : BLUE));
    const root = join(dir, 'resize');
    await writeFiles(root, { 'a/wide.png': banded, 'b/small.png': await solid(BLUE, 'png', [4, 4]) });
    const ds = await readImageFolder({ kind: 'image-folder', path: root, imageSize: [10, 10] });
    expect(ds.shape).toEqual([10, 10, 3]);
    // The crop keeps the middle 10 columns: no green margin survives, as it would with a squash.
    expectNear(pixelAt(ds, 'train', 0, 5, 0), RED, 10);
    expectNear(pixelAt(ds, 'train', 0, 5, 9), BLUE, 10);
    expectNear(pixelAt(ds, 'train', 1, 9, 9), BLUE, 2);
  });

  it('defaults the size to the first image and brings other sizes to it', async () => {
    const root = join(dir, 'sizes');
    await writeFiles(root, {
      'a/1.png': await solid(RED, 'png', [5, 7]),
      'b/1.png': await solid(BLUE, 'png', [20, 28]),
      'b/2.jpg': await solid(GREEN, 'jpeg', [3, 3]),
    });
    const ds = await readImageFolder({ kind: 'image-folder', path: root });
    expect(ds.shape).toEqual([5, 7, 3]);
    expect(ds.train.pixels.length).toBe(3 * 5 * 7 * 3);
    expectNear(pixelAt(ds, 'train', 1, 4, 6), BLUE, 2);
    expectNear(pixelAt(ds, 'train', 2, 2, 3), GREEN, 10);
  });

  it('converts to grey with channels: 1, and grey images to RGB by default', async () => {
    const root = join(dir, 'grey');
    const grey = await sharp(Buffer.alloc(16, 90), { raw: { width: 4, height: 4, channels: 1 } })
      .toColourspace('b-w')
      .png()
      .toBuffer();
    expect((await sharp(grey).metadata()).channels).toBe(1);
    await writeFiles(root, { 'a/1.png': grey, 'b/1.png': await solid(RED, 'png', [4, 4]) });
    const mono = await readImageFolder({ kind: 'image-folder', path: root, channels: 1 });
    expect(mono.shape).toEqual([4, 4, 1]);
    expect(pixelAt(mono, 'train', 0)).toEqual([90]);
    const rgb = await readImageFolder({ kind: 'image-folder', path: root });
    expect(rgb.shape).toEqual([4, 4, 3]);
    expect(pixelAt(rgb, 'train', 0)).toEqual([90, 90, 90]);
  });

  it('drops the alpha channel of RGBA PNGs', async () => {
    const root = join(dir, 'alpha');
    const rgba = await sharp({
      create: { width: 3, height: 3, channels: 4, background: { r: 1, g: 2, b: 3, alpha: 0.5 } },
    })
      .png()
      .toBuffer();
    await writeFiles(root, { 'a/1.png': rgba, 'b/1.png': rgba });
    const ds = await readImageFolder({ kind: 'image-folder', path: root });
    expect(ds.shape).toEqual([3, 3, 3]);
  });

  it('keeps the first limitPerClass images by name, from a folder and from an archive in any order', async () => {
    const files: Record<string, Buffer> = {};
    const shades = [10, 20, 30, 40, 50];
    // Written in reverse name order, so archive order and name order disagree.
    for (const shade of [...shades].reverse()) {
      files[`train/a/${shade}.png`] = await solid([shade, 0, 0], 'png', [2, 2]);
      files[`train/b/${shade}.png`] = await solid([0, shade, 0], 'png', [2, 2]);
    }
    const root = join(dir, 'limit');
    await writeFiles(root, files);
    const archive = join(dir, 'limit.tar.gz');
    await writeTar(archive, tarEntries(files), { gzip: true });
    for (const path of [root, archive]) {
      const ds = await readImageFolder({ kind: 'image-folder', path, limitPerClass: 2 });
      expect(ds.train.count).toBe(4);
      expect([...ds.train.labels]).toEqual([0, 0, 1, 1]);
      expect([0, 1].map((i) => pixelAt(ds, 'train', i)[0])).toEqual([10, 20]);
      expect([2, 3].map((i) => pixelAt(ds, 'train', i)[1])).toEqual([10, 20]);
    }
  });

  it('reports progress up to the total', async () => {
    const root = join(dir, 'progress');
    await writeFiles(root, { 'a/1.png': await solid(RED, 'png'), 'b/1.png': await solid(RED, 'png') });
    const seen: string[] = [];
    await readImageFolder(
      { kind: 'image-folder', path: root },
      { onProgress: (p) => seen.push(`${p.done}/${p.total}`) },
    );
    expect(seen.at(-1)).toBe('2/2');
  });
});

describe('image folder: bad input', () => {
  it('names a truncated image file', async () => {
    const root = join(dir, 'bad');
    const jpeg = await solid(RED, 'jpeg', [32, 32]);
    await writeFiles(root, {
      'a/fine.png': await solid(RED, 'png'),
      'b/cut.jpg': jpeg.subarray(0, jpeg.length >> 1),
    });
    const error = await caught(readImageFolder({ kind: 'image-folder', path: root }));
    expect(error.file).toBe(join(root, 'b', 'cut.jpg'));
    expect(error.message).toContain(join(root, 'b', 'cut.jpg'));
    expect(error.message).toMatch(/unreadable or truncated image/);
  });

  it('names an unreadable image entry inside an archive', async () => {
    const archive = join(dir, 'bad.tar.gz');
    const png = await solid(RED, 'png');
    await writeTar(
      archive,
      tarEntries({ 'train/a/1.png': png, 'train/b/junk.png': 'definitely not a png', 'train/b/2.png': png }),
      { gzip: true },
    );
    const error = await caught(readImageFolder({ kind: 'image-folder', path: archive }));
    expect(error.file).toBe(archive);
    expect(error.entry).toBe('train/b/junk.png');
    expect(error.message).toContain(archive);
    expect(error.message).toContain('train/b/junk.png');
  });

  it('refuses an empty class folder, naming it', async () => {
    const root = join(dir, 'empty');
    await writeFiles(root, { 'train/a/1.png': await solid(RED, 'png'), 'train/b/1.png': await solid(RED, 'png') });
    await mkdir(join(root, 'train', 'c'));
    await writeFile(join(root, 'train', 'c', 'readme.txt'), 'no images here');
    const error = await caught(readImageFolder({ kind: 'image-folder', path: root }));
    expect(error.file).toBe(join(root, 'train', 'c'));
    expect(error.message).toMatch(/empty class folder "c"/);

    const archive = join(dir, 'empty.tar');
    await writeTar(archive, [
      ...tarEntries({ 'd/train/a/1.png': await solid(RED, 'png'), 'd/train/b/1.png': await solid(RED, 'png') }),
      { name: 'd/train/c/' },
    ]);
    const inArchive = await caught(readImageFolder({ kind: 'image-folder', path: archive }));
    expect(inArchive.file).toBe(archive);
    expect(inArchive.message).toContain('d/train/c');
  });

  it('refuses fewer than 2 classes', async () => {
    const root = join(dir, 'one');
    await writeFiles(root, { 'train/only/1.png': await solid(RED, 'png') });
    const error = await caught(readImageFolder({ kind: 'image-folder', path: root }));
    expect(error.message).toContain(join(root, 'train'));
    expect(error.message).toMatch(/found 1 class folder\(s\) \("only"\); need at least 2/);
    await mkdir(join(dir, 'none'));
    await expect(readImageFolder({ kind: 'image-folder', path: join(dir, 'none') })).rejects.toThrow(/found 0 class/);
  });

  it('refuses a test class without a training folder', async () => {
    const root = join(dir, 'stray');
    const png = await solid(RED, 'png');
    await writeFiles(root, { 'train/a/1.png': png, 'train/b/1.png': png, 'test/c/1.png': png });
    await expect(readImageFolder({ kind: 'image-folder', path: root })).rejects.toThrow(/test class "c"/);
  });

  it('refuses archive entries with .. or absolute paths', async () => {
    const png = await solid(RED, 'png');
    for (const evil of ['train/a/../../../evil.png', '/tmp/evil.png']) {
      const archive = join(dir, 'evil.tar.gz');
      await writeTar(
        archive,
        [...tarEntries({ 'train/a/1.png': png, 'train/b/1.png': png }), { name: evil, data: png }],
        {
          gzip: true,
        },
      );
      const error = await caught(readImageFolder({ kind: 'image-folder', path: archive }));
      expect(error.entry).toBe(evil);
      expect(error.message).toContain(evil);
    }
  });

  it('names a missing path', async () => {
    const missing = join(dir, 'nope.tar.gz');
    const error = await caught(readImageFolder({ kind: 'image-folder', path: missing }));
    expect(error.message).toContain(missing);
  });

  it('validates limitPerClass and imageSize', async () => {
    await expect(readImageFolder({ kind: 'image-folder', path: dir, limitPerClass: 0 })).rejects.toThrow(
      /limitPerClass/,
    );
    await expect(readImageFolder({ kind: 'image-folder', path: dir, imageSize: [0, 3] })).rejects.toThrow(/imageSize/);
  });
});
