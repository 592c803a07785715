// Issue 9: a CreateSplit request must not make the splitter read, list or quote files outside
// its data roots, and reader errors must name the file and the problem, never the content.
// The real server on loopback, called through the generated client.
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { LocalFolderStore, callUnary, createLogger, startGrpcServer } from '@transferlab/platform';
import type { GrpcServer } from '@transferlab/platform';
import {
  type CreateSplitRequest,
  type Dataset,
  DatasetSplitterServiceClient,
  DatasetSplitterServiceService,
  SplitKind,
} from '@transferlab/proto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SERVICE_NAME, createServer } from './server.ts';

/** Planted in every file the tests make: it must never come back in a reply. */
const SECRET = 'db_password: hunter2-4f1c';
const caps = { trainPerClass: 20, valPerClass: 5, testPerClass: 5 };

let dir: string;
let root: string;
let server: GrpcServer;
let client: DatasetSplitterServiceClient;
const replies: string[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'splitter-leaks-'));
  root = join(dir, 'data');
  await mkdir(join(root, 'images', 'train', 'cat'), { recursive: true });
  await mkdir(join(root, 'images', 'train', 'dog'), { recursive: true });
  await mkdir(join(dir, 'elsewhere'), { recursive: true });
  await writeFile(join(dir, 'elsewhere', 'groups.yaml'), `A: [cat]\nB: [dog]\n${SECRET}\n`);
  await writeFile(join(root, 'groups.yaml'), `${SECRET}\nA: [cat]\n`);
  await writeFile(join(root, 'groups-broken.yaml'), `A: [cat\n${SECRET}\n`);
  await writeFile(join(root, 'secret.idx'), `${SECRET}\n`.repeat(10));
  await writeFile(join(root, 'images', 'train', 'cat', '1.jpg'), SECRET);
  await writeFile(join(root, 'images', 'train', 'dog', '1.jpg'), SECRET);
  await mkdir(join(root, 'cifar'));
  await writeFile(join(root, 'cifar', 'data_batch_1.bin'), SECRET.repeat(100));
  // Links inside the root that lead out of it.
  await symlink('/etc', join(root, 'etc-link'));
  await symlink('/etc/passwd', join(root, 'passwd-link'));
  await mkdir(join(root, 'linked', 'train'), { recursive: true });
  await symlink('/etc', join(root, 'linked', 'train', 'etc'));
  await symlink(join(dir, 'elsewhere'), join(root, 'linked', 'train', 'elsewhere'));

  const store = new LocalFolderStore(join(dir, 'store'));
  const log = createLogger('splitter-leaks-test', { level: 'silent' });
  server = await startGrpcServer({
    services: [
      {
        name: SERVICE_NAME,
        definition: DatasetSplitterServiceService,
        implementation: createServer({ store, log, dataRoot: root }),
      },
    ],
    port: 0,
    log,
  });
  client = new DatasetSplitterServiceClient(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure());
});

afterAll(async () => {
  client?.close();
  await server?.shutdown(1000);
  await rm(dir, { recursive: true, force: true });
});

const idx = (trainImages: string, trainLabels = trainImages): Dataset => ({
  kind: { $case: 'idx', value: { trainImages, trainLabels, classes: [] } },
});
const folder = (path: string): Dataset => ({ kind: { $case: 'imageFolder', value: { path } } });
const cifar = (path: string): Dataset => ({ kind: { $case: 'cifar10', value: { path } } });

/** The call's error; every reply is kept for the leak count at the end. */
async function refused(request: Partial<CreateSplitRequest>): Promise<grpc.ServiceError> {
  try {
    await callUnary(client.createSplit.bind(client), {
      dataset: { kind: { $case: 'mnist', value: {} } },
      settings: { kind: SplitKind.SPLIT_KIND_RANDOM, ...caps },
      seed: 1,
      expectedSplitId: '',
      wait: true,
      ...request,
    });
  } catch (error) {
    replies.push((error as grpc.ServiceError).details);
    return error as grpc.ServiceError;
  }
  throw new Error('expected the call to fail');
}

/** What a reply must never hold: the planted secret, or lines of the system's files. */
const LEAK = /hunter2|db_password|root:x:0|\/bin\/(ba)?sh|nologin/;

describe('dataset paths are confined to the data root', () => {
  const outside: Array<[string, () => Dataset, string]> = [
    ['an absolute path to /etc/passwd', () => idx('/etc/passwd'), 'dataset.idx.train_images'],
    ['/root as an image folder', () => folder('/root'), 'dataset.image_folder.path'],
    ['../../../etc climbing out', () => folder('../../../etc'), 'dataset.image_folder.path'],
    ['a path through the root and back out', () => idx(`${root}/../elsewhere/groups.yaml`), 'dataset.idx.train_images'],
    ['a symbolic link to /etc inside the root', () => cifar('etc-link'), 'dataset.cifar10.path'],
    ['a symbolic link to /etc/passwd inside the root', () => idx('passwd-link'), 'dataset.idx.train_images'],
    ['a sibling folder whose name starts like the root', () => folder(`${root}-other`), 'dataset.image_folder.path'],
  ];
  for (const [what, dataset, field] of outside) {
    it(`refuses ${what} with INVALID_ARGUMENT naming ${field}`, async () => {
      const error = await refused({ dataset: dataset() });
      expect(error.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(error.details.startsWith(`${field}: `)).toBe(true);
      expect(error.details).toMatch(/outside the data root/);
      expect(error.details).not.toMatch(LEAK);
    });
  }

  it('refuses a groups file outside the root, and one at /etc/passwd', async () => {
    for (const groupsFile of [join(dir, 'elsewhere', 'groups.yaml'), '/etc/passwd', '../elsewhere/groups.yaml']) {
      const error = await refused({ settings: { kind: SplitKind.SPLIT_KIND_GROUPS, groupsFile, ...caps } });
      expect(error.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(error.details).toMatch(/^settings\.groups_file: .*outside the data root/);
    }
  });

  it('refuses a class folder linked out of the root without listing what is there', async () => {
    const error = await refused({ dataset: folder('linked') });
    expect(error.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(error.details).toMatch(
      /linked\/train\/(etc|elsewhere): is a symbolic link that leads outside the data root/,
    );
    expect(error.details).not.toMatch(/passwd|groups\.yaml|hosts/);
  });
});

describe('reader errors name the file and the problem, never the content', () => {
  it('a groups file that is not one (issue 9 leaked its db_password line)', async () => {
    for (const groupsFile of ['groups.yaml', 'groups-broken.yaml']) {
      const error = await refused({ settings: { kind: SplitKind.SPLIT_KIND_GROUPS, groupsFile, ...caps } });
      expect([grpc.status.INVALID_ARGUMENT, grpc.status.FAILED_PRECONDITION]).toContain(error.code);
      expect(error.details).toContain('groups');
      expect(error.details).not.toMatch(LEAK);
    }
  });

  it('an IDX file, a corrupt JPEG and a truncated CIFAR batch holding a secret', async () => {
    const cases: Array<[Dataset, RegExp]> = [
      [idx('secret.idx'), /secret\.idx at byte 0: not an IDX file: bad magic number/],
      [folder('images'), /images\/train\/(cat|dog)\/1\.jpg: unreadable or truncated image/],
      [cifar('cifar'), /data_batch_1\.bin: length \d+ is not a positive multiple/],
    ];
    for (const [dataset, message] of cases) {
      const error = await refused({ dataset });
      expect(error.code).toBe(grpc.status.FAILED_PRECONDITION);
      expect(error.details).toMatch(message);
      expect(error.details).not.toMatch(LEAK);
    }
  });

  it('found no leak in any reply (the figure docs/reliability.md reports)', () => {
    const leaks = replies.filter((reply) => LEAK.test(reply));
    console.log(`file-leaks: ${replies.length} hostile requests, ${leaks.length} leaks`);
    expect(replies.length).toBeGreaterThanOrEqual(16);
    expect(leaks).toEqual([]);
  });
});
