// Issue 9: every bad dataset ends `transferlab run` and `transferlab sweep start --watch` with a
// non-zero exit and a message that names the file and the problem, and quotes none of its
// content. `run` goes through the CLI as a user runs it; `sweep start` through every service
// as its own process with a real nats-server and a real S3 (radosgw), as the e2e tests do.
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO, type RealServers, realServers } from './support/servers.ts';
import { type Services, startServices } from './support/services.ts';

/** Planted in every bad file: it must never reach the user's terminal. */
const SECRET = 'db_password: hunter2-9c1e';
const secretBytes = (length: number): Buffer =>
  Buffer.from(SECRET.repeat(Math.ceil(length / SECRET.length))).subarray(0, length);

function idxHeader(type: number, dims: number[]): Buffer {
  const header = Buffer.alloc(4 + 4 * dims.length);
  header.writeUInt8(type, 2);
  header.writeUInt8(dims.length, 3);
  dims.forEach((dim, i) => header.writeUInt32BE(dim, 4 + 4 * i));
  return header;
}
const idxImages = (count: number, data = count * 4): Buffer =>
  Buffer.concat([idxHeader(8, [count, 2, 2]), Buffer.alloc(data, 7)]);
const idxLabels = (count: number, value = 1): Buffer =>
  Buffer.concat([idxHeader(8, [count]), Buffer.alloc(count, value)]);
const cifarRecord = (label: number): Buffer => Buffer.concat([Buffer.from([label]), Buffer.alloc(3072, 9)]);
const cifarBatch = (records: number, label = 1): Buffer =>
  Buffer.concat(Array.from({ length: records }, (_, i) => cifarRecord(i % 2 === 0 ? 0 : label)));

interface BadCase {
  name: string;
  /** Files to write, relative to the case's folder. */
  files: Record<string, Buffer | string>;
  /** Empty folders to make. */
  dirs?: string[];
  /** The spec's `dataset:` line, paths relative to the spec. */
  dataset: string;
  /** The file the message must name, relative to the case's folder. */
  names: string;
  problem: RegExp;
}

const cifarGood = (except: string): Record<string, Buffer> =>
  Object.fromEntries(
    [1, 2, 3, 4, 5]
      .filter((i) => `data_batch_${i}.bin` !== except)
      .map((i) => [`cifar/data_batch_${i}.bin`, cifarBatch(4)]),
  );

const CASES: BadCase[] = [
  {
    name: 'an empty class folder',
    files: { 'images/train/cat/1.jpg': secretBytes(64) },
    dirs: ['images/train/dog'],
    dataset: '{ kind: image-folder, path: images, imageSize: [8, 8] }',
    names: 'images/train/dog',
    problem: /empty class folder "dog"/,
  },
  {
    name: 'a corrupt JPEG',
    files: { 'images/train/cat/1.jpg': secretBytes(300), 'images/train/dog/1.jpg': secretBytes(300) },
    dataset: '{ kind: image-folder, path: images, imageSize: [8, 8] }',
    names: 'images/train/',
    problem: /unreadable or truncated image/,
  },
  {
    name: 'an empty JPEG',
    files: { 'images/train/cat/1.jpg': '', 'images/train/dog/1.jpg': '' },
    dataset: '{ kind: image-folder, path: images, imageSize: [8, 8] }',
    names: 'images/train/',
    problem: /unreadable or truncated image/,
  },
  {
    name: 'a JPEG cut after its header',
    files: {
      'images/train/cat/1.jpg': Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0, 16]), secretBytes(40)]),
      'images/train/dog/1.jpg': Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0, 16]), secretBytes(40)]),
    },
    dataset: '{ kind: image-folder, path: images, imageSize: [8, 8] }',
    names: 'images/train/',
    problem: /unreadable or truncated image/,
  },
  {
    name: 'one class folder only',
    files: { 'images/train/cat/1.jpg': secretBytes(64) },
    dataset: '{ kind: image-folder, path: images, imageSize: [8, 8] }',
    names: 'images/train',
    problem: /found 1 class folder\(s\).*need at least 2/,
  },
  {
    name: 'a truncated CIFAR batch',
    files: { ...cifarGood('data_batch_3.bin'), 'cifar/data_batch_3.bin': cifarBatch(4).subarray(0, 3073 * 3 + 100) },
    dataset: '{ kind: cifar10, path: cifar }',
    names: 'cifar/data_batch_3.bin',
    problem: /is not a positive multiple of the record size 3073.*truncated/,
  },
  {
    name: 'a missing CIFAR batch',
    files: cifarGood('data_batch_5.bin'),
    dataset: '{ kind: cifar10, path: cifar }',
    names: 'cifar',
    problem: /missing data_batch_5\.bin/,
  },
  {
    name: 'an empty CIFAR batch',
    files: { ...cifarGood('data_batch_2.bin'), 'cifar/data_batch_2.bin': '' },
    dataset: '{ kind: cifar10, path: cifar }',
    names: 'cifar/data_batch_2.bin',
    problem: /length 0 is not a positive multiple/,
  },
  {
    name: 'a CIFAR label out of range',
    files: { ...cifarGood('data_batch_1.bin'), 'cifar/data_batch_1.bin': cifarBatch(4, 200) },
    dataset: '{ kind: cifar10, path: cifar }',
    names: 'cifar/data_batch_1.bin',
    problem: /out of range 0\.\.9/,
  },
  {
    name: 'an IDX file with a bad magic number',
    files: { 'idx/images': secretBytes(200), 'idx/labels': idxLabels(10) },
    dataset: '{ kind: idx, trainImages: idx/images, trainLabels: idx/labels }',
    names: 'idx/images',
    problem: /not an IDX file: bad magic number/,
  },
  {
    name: 'a short IDX labels file',
    files: { 'idx/images': idxImages(10), 'idx/labels': idxLabels(6) },
    dataset: '{ kind: idx, trainImages: idx/images, trainLabels: idx/labels }',
    names: 'idx/labels',
    problem: /label count 6 does not match image count 10/,
  },
  {
    name: 'a truncated IDX images file',
    files: { 'idx/images': idxImages(10, 25), 'idx/labels': idxLabels(10) },
    dataset: '{ kind: idx, trainImages: idx/images, trainLabels: idx/labels }',
    names: 'idx/images',
    problem: /length does not match the header dims \[10, 2, 2\]/,
  },
  {
    name: 'an empty IDX labels file',
    files: { 'idx/images': idxImages(10), 'idx/labels': '' },
    dataset: '{ kind: idx, trainImages: idx/images, trainLabels: idx/labels }',
    names: 'idx/labels',
    problem: /not an IDX file/,
  },
  {
    name: 'a corrupt gzipped IDX file',
    files: {
      'idx/images.gz': Buffer.concat([gzipSync(idxImages(10)).subarray(0, 20), secretBytes(50)]),
      'idx/labels': idxLabels(10),
    },
    dataset: '{ kind: idx, trainImages: idx/images.gz, trainLabels: idx/labels }',
    names: 'idx/images.gz',
    problem: /corrupt or truncated gzip data/,
  },
  {
    name: 'a dataset file that is not there',
    files: { 'idx/labels': idxLabels(10) },
    dataset: '{ kind: idx, trainImages: idx/no-such-file, trainLabels: idx/labels }',
    names: 'idx/no-such-file',
    problem: /does not exist|no such file|ENOENT/,
  },
];

const spec = (name: string, dataset: string): string => `
name: ${name}
dataset: ${dataset}
split: { kind: random, trainPerClass: 2, valPerClass: 1, testPerClass: 1 }
net: { kind: small, width: 0.25 }
training: { batchSize: 4, maxEpochs: 1, patience: 1, augment: false, scoreTopK: 1 }
layers: [1]
arms: [baseA, baseB, AnB]
concurrency: 1
`;

const slug = (name: string): string =>
  name
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-|-$/g, '');

async function writeCase(root: string, bad: BadCase): Promise<string> {
  const dir = join(root, slug(bad.name));
  for (const folder of bad.dirs ?? []) await mkdir(join(dir, folder), { recursive: true });
  for (const [file, content] of Object.entries(bad.files)) {
    await mkdir(dirname(join(dir, file)), { recursive: true });
    await writeFile(join(dir, file), content);
  }
  const file = join(dir, 'spec.yaml');
  await writeFile(file, spec(slug(bad.name), bad.dataset));
  return dir;
}

interface Outcome {
  code: number;
  output: string;
}

function cli(args: string[], options: { cwd: string; env?: Record<string, string> }): Promise<Outcome> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [join(REPO, 'services/cli/bin/transferlab.js'), ...args],
      { cwd: options.cwd, env: { ...process.env, ...options.env }, timeout: 120_000 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
        resolve({ code, output: `${stdout}\n${stderr}` });
      },
    );
  });
}

function expectLoud(bad: BadCase, dir: string, outcome: Outcome): void {
  const context = `${bad.name}:\n${outcome.output.slice(-3000)}`;
  expect(outcome.code, context).not.toBe(0);
  expect(outcome.output, context).toContain(join(dir, bad.names));
  expect(outcome.output, context).toMatch(bad.problem);
  expect(outcome.output, context).not.toMatch(/hunter2|db_password/);
}

let work: string;
const dirs = new Map<string, string>();
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tl-bad-data-'));
  for (const bad of CASES) dirs.set(bad.name, await writeCase(work, bad));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('transferlab run on a bad dataset', () => {
  for (const bad of CASES) {
    it(`fails loudly on ${bad.name}`, async () => {
      const dir = dirs.get(bad.name)!;
      const outcome = await cli(['run', 'spec.yaml', '--store', join(dir, 'store'), '--progress', 'lines'], {
        cwd: dir,
      });
      expectLoud(bad, dir, outcome);
      expect(outcome.code).toBe(1);
    });
  }
});

describe('transferlab sweep start --watch on a bad dataset, through every service', () => {
  let servers: RealServers;
  let services: Services;
  beforeAll(async () => {
    servers = await realServers();
    services = await startServices({ servers, name: 'bad-data', env: { TRANSFERLAB_DATA_ROOT: work } });
  }, 240_000);
  afterAll(async () => {
    await services?.stop();
    await servers?.stop();
  }, 60_000);

  for (const bad of CASES) {
    it(`fails loudly on ${bad.name}`, async () => {
      const dir = dirs.get(bad.name)!;
      const outcome = await cli(
        ['sweep', 'start', '-f', 'spec.yaml', '--watch', '--progress', 'lines', '--server', services.controllerAddress],
        { cwd: dir, env: services.env },
      );
      expectLoud(bad, dir, outcome);
      expect(outcome.code).toBe(1);
    });
  }
});
