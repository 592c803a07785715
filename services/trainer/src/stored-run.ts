import { createHash } from 'node:crypto';
import type { CheckpointManifest, TrainState } from '@transferlab/nn';
import type { ObjectStore } from '@transferlab/platform';
import { type TrainingOutcome, cellKeys, readTrainingOutcome } from '@transferlab/runner';

/** A checkpoint in the store: its manifest's key and sha256, as the contracts' CheckpointRef. */
export interface CheckpointRef {
  key: string;
  sha256: string;
}

/** What the store says about a cell's training, without loading any weights. */
export type StoredRun =
  | { state: 'done'; outcome: TrainingOutcome; finalCheckpoint: CheckpointRef | undefined }
  /** Interrupted (or still running elsewhere): `epoch` is the 0-based epoch it resumes in. */
  | { state: 'resumable'; checkpoint: CheckpointRef; epoch: number; nextBatch: number; step: number }
  | { state: 'none' };

/** The reference of the checkpoint under `prefix`, or undefined when it has no manifest. */
export async function checkpointRefAt(store: ObjectStore, prefix: string): Promise<CheckpointRef | undefined> {
  const key = `${prefix}/manifest.json`;
  if (!(await store.stat(key))) return undefined;
  const bytes = await store.get(key);
  return { key, sha256: createHash('sha256').update(bytes).digest('hex') };
}

/** The loop state of a training checkpoint: only its manifest and state object are read. */
async function checkpointState(store: ObjectStore, prefix: string, manifestBytes: Buffer): Promise<TrainState> {
  const manifest = JSON.parse(manifestBytes.toString('utf8')) as CheckpointManifest;
  const entry = manifest.objects.find((object) => object.role === 'state');
  if (!entry) throw new Error(`checkpoint ${store.describe(`${prefix}/manifest.json`)} holds no training state`);
  const key = `${prefix}/${entry.key}`;
  const bytes = await store.get(key);
  const actual = createHash('sha256').update(bytes).digest('hex');
  if (actual !== entry.sha256) {
    throw new Error(`checkpoint object ${store.describe(key)} is corrupt: sha256 ${actual}, manifest ${entry.sha256}`);
  }
  return JSON.parse(bytes.toString('utf8')) as TrainState;
}

/**
 * training.json present → done; a training checkpoint → resumable at its epoch; else none.
 * The same order trainCell uses to decide what to do.
 */
export async function readStoredRun(store: ObjectStore, cellId: string): Promise<StoredRun> {
  const outcome = await readTrainingOutcome(store, cellId);
  if (outcome) return { state: 'done', outcome, finalCheckpoint: await checkpointRefAt(store, cellKeys.final(cellId)) };
  const prefix = cellKeys.checkpoint(cellId);
  const manifestKey = `${prefix}/manifest.json`;
  if (!(await store.stat(manifestKey))) return { state: 'none' };
  const manifestBytes = await store.get(manifestKey);
  const state = await checkpointState(store, prefix, manifestBytes);
  return {
    state: 'resumable',
    checkpoint: { key: manifestKey, sha256: createHash('sha256').update(manifestBytes).digest('hex') },
    epoch: state.epoch,
    nextBatch: state.nextBatch,
    step: state.step,
  };
}
