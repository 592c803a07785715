/**
 * DatasetSplitterService: turns a dataset, split settings and a seed into a split's shards and
 * manifest in the object store (runner's ensureSplits does the work). Splits are
 * content-addressed, so the service keeps nothing but the work in flight: a split whose manifest
 * is in the store is READY, whoever made it.
 */
import { stat } from 'node:fs/promises';
import { status } from '@grpc/grpc-js';
import {
  PathOutsideRootsError,
  type SplitManifest,
  SplitError,
  confinePath,
  isDataError,
  manifestKey,
  openSplit,
  parseDataRoots,
} from '@transferlab/data';
import { SpecError, splitId, validateSpec } from '@transferlab/experiment';
import type { SplitTask, SweepDataset } from '@transferlab/experiment';
import { type Bus, type Logger, type ObjectStore, grpcError, unaryHandler } from '@transferlab/platform';
import { SplitState } from '@transferlab/proto';
import type {
  CreateSplitRequest,
  CreateSplitResponse,
  DatasetSplitterServiceServer,
  GetSplitResponse,
  Split,
} from '@transferlab/proto';
import {
  MapperError,
  datasetFromProto,
  datasetPaths,
  datasetToProto,
  splitManifestToProto,
  splitSettingsFromProto,
  splitSettingsToProto,
} from '@transferlab/proto/mappers';
import { checkSplitData, ensureSplits } from '@transferlab/runner/prepare-split';
import { getJson, putJson } from '@transferlab/runner/cell-store';

export const SERVICE_NAME = 'transferlab.v1.DatasetSplitterService';
export const DEFAULT_PORT = 50061;

export interface SplitterDeps {
  store: ObjectStore;
  /** Not used yet: splits are answered by RPC. Accepted so every service is wired the same way. */
  bus?: Bus;
  log: Logger;
  /**
   * TRANSFERLAB_DATA_ROOT: the folders (separated by ':') this splitter may read datasets and
   * groups files from. Relative paths resolve against the first; absolute ones, `..` and symbolic
   * links must stay inside one of them. Without it the splitter reads no files at all (the
   * built-in MNIST still works): a request must never make it read what it has no business with.
   */
  dataRoot?: string;
}

/** The inputs of a split as the splitter stores them beside its manifest, for GetSplit. */
export function splitTaskKey(id: string): string {
  return `splits/${id}/split.json`;
}

const SPLIT_ID = /^[-_A-Za-z0-9]{1,256}$/;

interface Attempt {
  task: SplitTask;
  startedAt: Date;
  work: Promise<Split>;
  /** Set once the work failed: GetSplit reports FAILED until a new CreateSplit tries again. */
  failure?: Error;
}

export function createServer(deps: SplitterDeps): DatasetSplitterServiceServer {
  const { store, log } = deps;
  const roots = parseDataRoots(deps.dataRoot);
  /** The latest attempt per split id made by this process: in flight, or failed. */
  const attempts = new Map<string, Attempt>();

  async function storedSplit(id: string): Promise<Split | undefined> {
    if (!(await store.stat(manifestKey(id)))) return undefined;
    const { manifest } = await openSplit(store, id);
    const task = await getJson<SplitTask>(store, splitTaskKey(id));
    return readySplit(manifest, task);
  }

  function start(task: SplitTask): Attempt {
    const attempt: Attempt = {
      task,
      startedAt: new Date(),
      work: (async () => {
        log.info({ splitId: task.id, dataset: task.dataset.kind, seed: task.seed }, 'making split');
        await putJson(store, splitTaskKey(task.id), task);
        const manifests = await ensureSplits(store, [task], { specDir: roots[0] ?? '/', dataRoots: roots });
        log.info({ splitId: task.id }, 'split ready');
        return readySplit(manifests.get(task.id)!, task);
      })(),
    };
    attempts.set(task.id, attempt);
    attempt.work.then(
      () => {
        if (attempts.get(task.id) === attempt) attempts.delete(task.id);
      },
      (error: unknown) => {
        attempt.failure = error instanceof Error ? error : new Error(String(error));
        log.warn({ splitId: task.id, err: attempt.failure }, 'making the split failed');
      },
    );
    return attempt;
  }

  return {
    createSplit: unaryHandler(async (request: CreateSplitRequest): Promise<CreateSplitResponse> => {
      const task = splitTaskOf(request);
      // Before anything else, even a split already in the store: no path outside the roots is looked at.
      await confineTask(task, roots);
      if (request.expectedSplitId && request.expectedSplitId !== task.id) {
        throw grpcError(
          status.FAILED_PRECONDITION,
          `expected_split_id is ${request.expectedSplitId}, but these inputs make split ${task.id}: ` +
            'the caller and the splitter disagree on the split id (different versions?)',
        );
      }
      const stored = await storedSplit(task.id);
      if (stored) {
        // Served only if the files it was made from are still what they were.
        await checkSplitData(store, task, { specDir: roots[0] ?? '/', dataRoots: roots }).catch((error: unknown) => {
          throw statusOfFailure(error as Error);
        });
        return { split: stored, created: false };
      }

      const inFlight = (): Attempt | undefined => {
        const attempt = attempts.get(task.id);
        return attempt && !attempt.failure ? attempt : undefined;
      };
      if (!inFlight()) await checkDatasetExists(task.dataset, roots);
      // No await between this look-up and start(): concurrent calls cannot both start the work.
      const running = inFlight();
      if (running) {
        return { split: request.wait ? await finished(running) : creatingSplit(running), created: false };
      }
      const attempt = start(task);
      return { split: request.wait ? await finished(attempt) : creatingSplit(attempt), created: true };
    }, log),

    getSplit: unaryHandler(async (request): Promise<GetSplitResponse> => {
      const id = request.splitId;
      if (!id) throw grpcError(status.INVALID_ARGUMENT, 'split_id: is required');
      if (!SPLIT_ID.test(id)) throw grpcError(status.INVALID_ARGUMENT, `split_id: '${id}' is not a split id`);
      const stored = await storedSplit(id);
      if (stored) return { split: stored };
      const attempt = attempts.get(id);
      if (attempt?.failure) return { split: failedSplit(attempt) };
      if (attempt) return { split: creatingSplit(attempt) };
      throw grpcError(status.NOT_FOUND, `split ${id}: no manifest at ${store.describe(manifestKey(id))}`);
    }, log),
  };
}

/** Waits for an attempt, turning its failure into the status the error deserves. */
async function finished(attempt: Attempt): Promise<Split> {
  try {
    return await attempt.work;
  } catch (error) {
    throw statusOfFailure(error as Error);
  }
}

function statusOfFailure(error: Error): Error {
  // The settings do not fit the data: a class named in the groups is not in the dataset, ...
  if (error instanceof SplitError) return grpcError(status.INVALID_ARGUMENT, error.message);
  if (error instanceof PathOutsideRootsError) return grpcError(status.INVALID_ARGUMENT, error.message);
  // The data is unreadable or malformed; the message starts with the file.
  if (isDataError(error)) return grpcError(status.FAILED_PRECONDITION, error.message);
  if ((error as NodeJS.ErrnoException).code === 'ENOENT') return grpcError(status.NOT_FOUND, error.message);
  return error;
}

function readySplit(manifest: SplitManifest, task: SplitTask | undefined): Split {
  return splitManifestToProto(manifest, { task, manifestKey: manifestKey(manifest.splitId) });
}

function pendingSplit(attempt: Attempt, state: SplitState, error = ''): Split {
  const { task } = attempt;
  return {
    id: task.id,
    seed: task.seed,
    dataset: datasetToProto(task.dataset),
    settings: splitSettingsToProto(task.split),
    state,
    manifestKey: manifestKey(task.id),
    imageShape: undefined,
    halves: [],
    error,
    createdAt: attempt.startedAt,
    updatedAt: new Date(),
  };
}

function creatingSplit(attempt: Attempt): Split {
  return pendingSplit(attempt, SplitState.SPLIT_STATE_CREATING);
}

function failedSplit(attempt: Attempt): Split {
  return pendingSplit(attempt, SplitState.SPLIT_STATE_FAILED, attempt.failure?.message ?? 'failed');
}

// ---------------------------------------------------------------------------------------
// The request as a split task: every check that needs no data.

/** The split task a request asks for, checked as a spec's dataset and split would be. */
export function splitTaskOf(request: CreateSplitRequest): SplitTask {
  let dataset: SweepDataset;
  let split: SplitTask['split'];
  try {
    dataset = datasetFromProto(request.dataset, 'dataset');
    split = splitSettingsFromProto(request.settings, 'settings');
  } catch (error) {
    if (error instanceof MapperError) throw grpcError(status.INVALID_ARGUMENT, error.message);
    throw error;
  }
  try {
    // The spec's own schema: the same defaults (so the same split id) and the same checks.
    const spec = validateSpec({ name: 'create-split', dataset, split }, 'CreateSplitRequest');
    dataset = spec.dataset;
    split = spec.split;
  } catch (error) {
    if (!(error instanceof SpecError)) throw error;
    const problems = error.issues.map((issue) => `${protoField(issue.path, dataset)}: ${issue.message}`);
    throw grpcError(status.INVALID_ARGUMENT, `invalid CreateSplitRequest: ${problems.join('; ')}`);
  }

  // Named groups are one split whatever the repeat, as expandGrid makes them.
  let seed = request.seed;
  if (split.kind === 'groups') seed = 1;
  else if (!Number.isInteger(seed) || seed < 1) {
    throw grpcError(status.INVALID_ARGUMENT, `seed: a random split needs a seed >= 1, got ${seed}`);
  }
  return { id: splitId({ seed, dataset, split }), seed, dataset, split };
}

/** A spec path (`dataset.trainImages`, `split.groups.A[0]`) as the request's field path. */
function protoField(specPath: string, dataset: SweepDataset): string {
  const kind = dataset.kind.replace('-', '_');
  return specPath
    .replace(/^dataset\./, `dataset.${kind}.`)
    .replace(/^split\b/, 'settings')
    .replace(/groups\.([AB])\b/, (_match, half: string) => `groups.${half.toLowerCase()}`)
    .replace(/[A-Z]/g, (letter) => `_${letter.toLowerCase()}`);
}

/** Every path of the task confined to the data roots: INVALID_ARGUMENT naming the field otherwise. */
async function confineTask(task: SplitTask, roots: readonly string[]): Promise<void> {
  const paths = datasetPaths(task.dataset);
  if (task.split.groupsFile !== undefined) paths.push({ field: 'settings.groups_file', path: task.split.groupsFile });
  try {
    for (const { field, path } of paths) await confinePath(path, roots, field);
  } catch (error) {
    if (error instanceof PathOutsideRootsError) throw grpcError(status.INVALID_ARGUMENT, error.message);
    throw error;
  }
}

/** NOT_FOUND, naming the field, for a dataset file or folder that is not there (the path is confined already). */
async function checkDatasetExists(dataset: SweepDataset, roots: readonly string[]): Promise<void> {
  for (const { field, path } of datasetPaths(dataset)) {
    const file = await confinePath(path, roots, field);
    try {
      await stat(file);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw grpcError(status.NOT_FOUND, `${field}: ${path} does not exist`);
      throw grpcError(status.FAILED_PRECONDITION, `${field}: cannot read ${path} (${code ?? 'error'})`);
    }
  }
}
