/**
 * The checkpoint codec. A checkpoint under `<prefix>/` is:
 *
 *   model-<h>.json            TensorFlow.js model.json: topology (incl. which layers are frozen)
 *                             and the weights manifest, pointing at weights-<h>.bin
 *   weights-<h>.bin           the weights, float32
 *   optimizer-<h>.json        optimizer weight specs            (training checkpoints only)
 *   optimizer-weights-<h>.bin iterations and momentum buffers    (training checkpoints only)
 *   state-<h>.json            the loop's position and history   (training checkpoints only)
 *   manifest.json             every object above with its sha256 and size; written last
 *   manifest.previous.json    with `keepPrevious`: the manifest this one replaced
 *
 * <h> is the start of the object's sha256. Overwriting a checkpoint therefore never touches
 * the objects the current manifest names: the new objects go beside them, the manifest is
 * swapped atomically, and only then are the objects neither manifest names deleted. A crash at
 * any point leaves either the old or the new checkpoint readable, and a present manifest means
 * a complete one. A training checkpoint keeps the one before it too (`keepPrevious`), so an
 * object damaged after it was written (a flipped byte on disk) costs one checkpoint's work, not
 * the cell's: loading refuses the damaged one and `onRejected` lets the caller take the previous.
 */
import { createHash } from 'node:crypto';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import type { ObjectStore } from '@transferlab/platform';
import './layers.ts';
import { LEARNED_LAYERS } from './nets.ts';
import type { NamedWeights } from './transplant.ts';

export interface EpochRecord {
  /** 0-based. */
  epoch: number;
  /** Mean training loss over the epoch's batches. */
  loss: number;
  valTop1: number;
  learningRate: number;
  seconds: number;
}

export type StopReason = 'patience' | 'budget' | 'interrupted';

/** The training loop's position: with the weights and optimizer, enough to resume bit for bit. */
export interface TrainState {
  /** The 0-based epoch in progress; once finished, the number of epochs trained. */
  epoch: number;
  /** The first batch of `epoch` not yet trained. */
  nextBatch: number;
  /** Optimizer steps taken; also the dropout step counter. */
  step: number;
  learningRate: number;
  /** Accumulators of the epoch in progress, so a mid-epoch resume reports the same epoch loss. */
  partialEpoch: { lossSum: number; batches: number; seconds: number };
  history: EpochRecord[];
  /** -1 before the first evaluation. */
  bestValTop1: number;
  bestEpoch: number;
  trainImages: number;
  trainSeconds: number;
  /** Set once training has ended for good; an interrupted run leaves it unset, to be resumed. */
  stoppedBy?: Exclude<StopReason, 'interrupted'>;
}

/** Tensors as TensorFlow.js encodes them: specs plus one flat buffer. */
export interface SerializedWeights {
  specs: tf.io.WeightsManifestEntry[];
  data: ArrayBuffer;
}

/** TensorFlow.js model artifacts with the fields a LayersModel always produces. */
export interface SerializedModel {
  modelTopology: object;
  weightSpecs: tf.io.WeightsManifestEntry[];
  weightData: ArrayBuffer;
  format?: string;
  generatedBy?: string;
  convertedBy?: string | null;
}

/** A checkpoint: a net, plus the optimizer and loop state when it was written by training. */
export interface Checkpoint {
  model: SerializedModel;
  optimizer?: SerializedWeights;
  state?: TrainState;
}

/** What training writes and resumes from. */
export interface TrainCheckpoint extends Checkpoint {
  optimizer: SerializedWeights;
  state: TrainState;
}

export function isTrainCheckpoint(checkpoint: Checkpoint): checkpoint is TrainCheckpoint {
  return checkpoint.optimizer !== undefined && checkpoint.state !== undefined;
}

type Role = 'model' | 'weights' | 'optimizer' | 'optimizer-weights' | 'state';

export interface CheckpointManifest {
  format: 'transferlab-checkpoint';
  version: 1;
  /** Keys are relative to the checkpoint's prefix. */
  objects: Array<{ role: Role; key: string; sha256: string; size: number }>;
}

const MANIFEST = 'manifest.json';
const PREVIOUS_MANIFEST = 'manifest.previous.json';

/** A checkpoint whose manifest or objects do not match what was written: never loaded. */
export class CorruptCheckpointError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CorruptCheckpointError';
  }
}

export interface SaveCheckpointOptions {
  /** Keep the checkpoint this one replaces, as `manifest.previous.json` and its objects. */
  keepPrevious?: boolean;
}

export interface LoadCheckpointOptions {
  /**
   * Called when the latest checkpoint is corrupt and the previous one is tried instead; without
   * it a corrupt checkpoint throws. Throws when the previous one is missing or corrupt too.
   */
  onRejected?: (error: CorruptCheckpointError) => void;
}
const OBJECT_NAME = /^(model|weights|optimizer|optimizer-weights|state)-[0-9a-f]{16}\.(json|bin)$/;

/** A live net's weights and topology, detached from the net. */
export async function serializeModel(model: tfl.LayersModel): Promise<SerializedModel> {
  let captured: tf.io.ModelArtifacts | undefined;
  await model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      captured = artifacts;
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
    }),
  );
  if (
    captured?.modelTopology === undefined ||
    captured.weightSpecs === undefined ||
    captured.weightData === undefined
  ) {
    throw new Error(`net '${model.name}' saved without topology or weights`);
  }
  if (captured.modelTopology instanceof ArrayBuffer) throw new Error('expected a JSON topology from a LayersModel');
  return {
    modelTopology: captured.modelTopology,
    weightSpecs: captured.weightSpecs,
    weightData: tf.io.CompositeArrayBuffer.join(captured.weightData),
    format: captured.format,
    generatedBy: captured.generatedBy,
    convertedBy: captured.convertedBy ?? null,
  };
}

/** A net built from serialised artifacts, custom layers and frozen flags included. */
export async function modelFromArtifacts(artifacts: SerializedModel): Promise<tfl.LayersModel> {
  return tfl.loadLayersModel(tf.io.fromMemory(artifacts));
}

/**
 * Writes serialised weights into a net of the same architecture, matching by weight name and
 * checking every shape; a weight missing on either side is an error, not a skipped layer.
 */
export function restoreWeights(model: tfl.LayersModel, artifacts: SerializedModel): void {
  const decoded = tf.io.decodeWeights(artifacts.weightData, artifacts.weightSpecs);
  try {
    const used = new Set<string>();
    const assignments = model.layers
      .filter((layer) => layer.weights.length > 0)
      .map((layer) => {
        const values = layer.weights.map((weight) => {
          const value = decoded[weight.originalName];
          if (value === undefined)
            throw new Error(`checkpoint has no weight ${weight.originalName} for net '${model.name}'`);
          if (value.shape.join(',') !== weight.shape.join(',')) {
            throw new Error(
              `checkpoint weight ${weight.originalName} has shape [${value.shape.join(',')}], ` +
                `net '${model.name}' expects [${weight.shape.join(',')}]`,
            );
          }
          used.add(weight.originalName);
          return value;
        });
        return { layer, values };
      });
    const extra = Object.keys(decoded).filter((name) => !used.has(name));
    if (extra.length > 0) throw new Error(`checkpoint has weights net '${model.name}' lacks: ${extra.join(', ')}`);
    for (const { layer, values } of assignments) layer.setWeights(values);
  } finally {
    tf.dispose(Object.values(decoded));
  }
}

/** The learned layers' weights of a checkpoint, as the transplant takes them. Caller disposes. */
export function namedWeightsFromCheckpoint(checkpoint: Pick<Checkpoint, 'model'>): NamedWeights {
  const decoded = tf.io.decodeWeights(checkpoint.model.weightData, checkpoint.model.weightSpecs);
  const weights: NamedWeights = new Map();
  const kept = new Set<tf.Tensor>();
  for (const layer of LEARNED_LAYERS) {
    const kernel = decoded[`${layer}/kernel`];
    const bias = decoded[`${layer}/bias`];
    if (kernel !== undefined && bias !== undefined) {
      weights.set(layer, { kernel, bias });
      kept.add(kernel).add(bias);
    }
  }
  tf.dispose(Object.values(decoded).filter((tensor) => !kept.has(tensor)));
  return weights;
}

/**
 * The optimizer's iterations and slots. Slot names get their index as a prefix: tfjs matches
 * slots to variables by position, and the names alone need not be unique after a resume.
 */
export async function serializeOptimizer(optimizer: tf.Optimizer): Promise<SerializedWeights> {
  const weights = await optimizer.getWeights();
  try {
    const { data, specs } = await tf.io.encodeWeights(
      weights.map(({ name, tensor }, i) => ({ name: `${i}/${name}`, tensor })),
    );
    return { data, specs };
  } finally {
    // The iterations scalar is made for us; the slots are the optimizer's own variables.
    const iterations = weights[0];
    if (iterations?.name === 'iter') iterations.tensor.dispose();
  }
}

/** Loads serialised iterations and slots into a fresh optimizer of the same kind. */
export async function restoreOptimizer(optimizer: tf.Optimizer, weights: SerializedWeights): Promise<void> {
  const decoded = tf.io.decodeWeights(weights.data, weights.specs);
  try {
    const ordered = weights.specs.map((spec) => {
      const tensor = decoded[spec.name];
      if (tensor === undefined) throw new Error(`optimizer weights lack ${spec.name}`);
      return { name: spec.name.replace(/^\d+\//, ''), tensor };
    });
    await optimizer.setWeights(ordered);
  } finally {
    tf.dispose(Object.values(decoded));
  }
}

export interface CheckpointInput {
  /** A live net is serialised here; artifacts are written as they are. */
  model: tfl.LayersModel | SerializedModel;
  optimizer?: SerializedWeights;
  state?: TrainState;
}

/** Writes a checkpoint under `prefix`, replacing any checkpoint there; returns its manifest. */
export async function saveCheckpoint(
  store: ObjectStore,
  prefix: string,
  checkpoint: CheckpointInput,
  options: SaveCheckpointOptions = {},
): Promise<CheckpointManifest> {
  const model = checkpoint.model instanceof tfl.LayersModel ? await serializeModel(checkpoint.model) : checkpoint.model;
  const encoder = new TextEncoder();
  const objects: Array<{ role: Role; bytes: Uint8Array; ext: 'json' | 'bin' }> = [];
  const add = (role: Role, bytes: Uint8Array, ext: 'json' | 'bin'): string => {
    objects.push({ role, bytes, ext });
    return objectName(role, bytes, ext);
  };

  const weightsName = add('weights', new Uint8Array(model.weightData), 'bin');
  const modelJson = {
    format: model.format,
    generatedBy: model.generatedBy,
    convertedBy: model.convertedBy ?? null,
    modelTopology: model.modelTopology,
    weightsManifest: [{ paths: [weightsName], weights: model.weightSpecs }],
  };
  add('model', encoder.encode(JSON.stringify(modelJson)), 'json');
  if (checkpoint.optimizer) {
    add('optimizer-weights', new Uint8Array(checkpoint.optimizer.data), 'bin');
    add('optimizer', encoder.encode(JSON.stringify({ specs: checkpoint.optimizer.specs })), 'json');
  }
  if (checkpoint.state) add('state', encoder.encode(JSON.stringify(checkpoint.state)), 'json');

  const manifest: CheckpointManifest = { format: 'transferlab-checkpoint', version: 1, objects: [] };
  for (const { role, bytes, ext } of objects) {
    const key = objectName(role, bytes, ext);
    const hash = sha256(bytes);
    await store.put(keyOf(prefix, key), bytes, { metadata: { sha256: hash } });
    manifest.objects.push({ role, key, sha256: hash, size: bytes.length });
  }
  const kept = new Set<string>();
  if (options.keepPrevious) {
    // The manifest being replaced becomes the previous one; the objects it names stay. One that
    // cannot be parsed is not worth keeping: the previous slot is left as it was.
    const old = await readManifestIfValid(store, keyOf(prefix, MANIFEST));
    if (old) {
      await store.put(keyOf(prefix, PREVIOUS_MANIFEST), old.bytes);
      for (const object of old.manifest.objects) kept.add(object.key);
    } else {
      const previous = await readManifestIfValid(store, keyOf(prefix, PREVIOUS_MANIFEST));
      for (const object of previous?.manifest.objects ?? []) kept.add(object.key);
    }
  } else if ((await store.stat(keyOf(prefix, PREVIOUS_MANIFEST))) !== undefined) {
    await store.delete(keyOf(prefix, PREVIOUS_MANIFEST));
  }
  await store.put(keyOf(prefix, MANIFEST), encoder.encode(JSON.stringify(manifest, null, 2)));

  const current = new Set([...manifest.objects.map((object) => object.key), ...kept]);
  const base = prefix === '' ? '' : `${trimSlash(prefix)}/`;
  for (const key of await store.list(base)) {
    const name = key.slice(base.length);
    if (OBJECT_NAME.test(name) && !current.has(name)) await store.delete(key);
  }
  return manifest;
}

/**
 * Reads the checkpoint under `prefix`, verifying every object's sha256; undefined when there is
 * no manifest (no checkpoint, or one whose writing never finished). A corrupt checkpoint throws
 * CorruptCheckpointError, or with `onRejected`, the previous checkpoint is loaded instead.
 */
export async function loadCheckpoint(
  store: ObjectStore,
  prefix: string,
  options: LoadCheckpointOptions = {},
): Promise<Checkpoint | undefined> {
  const manifestKey = keyOf(prefix, MANIFEST);
  if ((await store.stat(manifestKey)) === undefined) return undefined;
  try {
    return await loadFromManifest(store, prefix, manifestKey);
  } catch (error) {
    if (!(error instanceof CorruptCheckpointError) || options.onRejected === undefined) throw error;
    const previousKey = keyOf(prefix, PREVIOUS_MANIFEST);
    if ((await store.stat(previousKey)) === undefined) {
      throw new CorruptCheckpointError(`${error.message}; there is no previous checkpoint to resume from`, {
        cause: error,
      });
    }
    options.onRejected(error);
    try {
      return await loadFromManifest(store, prefix, previousKey);
    } catch (previousError) {
      if (!(previousError instanceof CorruptCheckpointError)) throw previousError;
      throw new CorruptCheckpointError(`${error.message}; the previous checkpoint too: ${previousError.message}`, {
        cause: previousError,
      });
    }
  }
}

async function loadFromManifest(store: ObjectStore, prefix: string, manifestKey: string): Promise<Checkpoint> {
  const manifest = parseManifest(await store.get(manifestKey), store.describe(manifestKey));

  const read = async (role: Role): Promise<Buffer | undefined> => {
    const entry = manifest.objects.find((object) => object.role === role);
    if (entry === undefined) return undefined;
    const key = keyOf(prefix, entry.key);
    let bytes: Buffer;
    try {
      bytes = await store.get(key);
    } catch (error) {
      // Missing, or refused by the store's own content hash (S3): as corrupt as a bad sha256.
      const name = (error as Error).name;
      if (name !== 'ObjectNotFoundError' && name !== 'ObjectIntegrityError') throw error;
      throw new CorruptCheckpointError(
        `checkpoint object ${store.describe(key)} cannot be read: ${(error as Error).message}`,
        { cause: error },
      );
    }
    const actual = sha256(bytes);
    if (actual !== entry.sha256) {
      throw new CorruptCheckpointError(
        `checkpoint object ${store.describe(key)} is corrupt: its sha256 is ${actual}, the manifest records ${entry.sha256}`,
      );
    }
    return bytes;
  };
  const json = (bytes: Buffer, role: Role): unknown => {
    try {
      return JSON.parse(bytes.toString('utf8'));
    } catch (error) {
      throw new CorruptCheckpointError(`checkpoint ${role} object under ${prefix} is not JSON`, { cause: error });
    }
  };

  const modelBytes = await read('model');
  const weightBytes = await read('weights');
  if (modelBytes === undefined || weightBytes === undefined) {
    throw new CorruptCheckpointError(`checkpoint manifest ${store.describe(manifestKey)} names no model or no weights`);
  }
  const modelJson = json(modelBytes, 'model') as {
    modelTopology: object;
    weightsManifest: Array<{ weights: tf.io.WeightsManifestEntry[] }>;
    format?: string;
    generatedBy?: string;
    convertedBy?: string | null;
  };
  const checkpoint: Checkpoint = {
    model: {
      modelTopology: modelJson.modelTopology,
      weightSpecs: modelJson.weightsManifest.flatMap((group) => group.weights),
      weightData: ownBuffer(weightBytes),
      format: modelJson.format,
      generatedBy: modelJson.generatedBy,
      convertedBy: modelJson.convertedBy ?? null,
    },
  };
  const optimizerBytes = await read('optimizer');
  const optimizerWeights = await read('optimizer-weights');
  if (optimizerBytes !== undefined && optimizerWeights !== undefined) {
    const { specs } = json(optimizerBytes, 'optimizer') as { specs: tf.io.WeightsManifestEntry[] };
    checkpoint.optimizer = { specs, data: ownBuffer(optimizerWeights) };
  }
  const stateBytes = await read('state');
  if (stateBytes !== undefined) checkpoint.state = json(stateBytes, 'state') as TrainState;
  return checkpoint;
}

/** The net of the checkpoint under `prefix`; throws when there is none. */
export async function loadModel(store: ObjectStore, prefix: string): Promise<tfl.LayersModel> {
  const checkpoint = await loadCheckpoint(store, prefix);
  if (checkpoint === undefined) throw new Error(`no checkpoint at ${store.describe(keyOf(prefix, MANIFEST))}`);
  return modelFromArtifacts(checkpoint.model);
}

/** The manifest at `key` and its bytes, or undefined when absent or not a valid manifest. */
async function readManifestIfValid(
  store: ObjectStore,
  key: string,
): Promise<{ bytes: Buffer; manifest: CheckpointManifest } | undefined> {
  if ((await store.stat(key)) === undefined) return undefined;
  const bytes = await store.get(key);
  try {
    return { bytes, manifest: parseManifest(bytes, key) };
  } catch (error) {
    if (error instanceof CorruptCheckpointError) return undefined;
    throw error;
  }
}

function parseManifest(bytes: Buffer, where: string): CheckpointManifest {
  let manifest: Partial<CheckpointManifest>;
  try {
    manifest = JSON.parse(bytes.toString('utf8')) as Partial<CheckpointManifest>;
  } catch (error) {
    throw new CorruptCheckpointError(
      `checkpoint manifest ${where} is unreadable (truncated or corrupt): ${(error as Error).message}`,
    );
  }
  const valid =
    manifest.format === 'transferlab-checkpoint' &&
    manifest.version === 1 &&
    Array.isArray(manifest.objects) &&
    manifest.objects.every(
      (object) =>
        typeof object.key === 'string' &&
        OBJECT_NAME.test(object.key) &&
        typeof object.sha256 === 'string' &&
        /^[0-9a-f]{64}$/.test(object.sha256),
    );
  if (!valid) {
    throw new CorruptCheckpointError(`checkpoint manifest ${where} is not a version 1 transferlab checkpoint manifest`);
  }
  return manifest as CheckpointManifest;
}

function objectName(role: Role, bytes: Uint8Array, ext: 'json' | 'bin'): string {
  return `${role}-${sha256(bytes).slice(0, 16)}.${ext}`;
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

function trimSlash(prefix: string): string {
  return prefix.replace(/\/+$/, '');
}

function keyOf(prefix: string, name: string): string {
  const base = trimSlash(prefix);
  return base === '' ? name : `${base}/${name}`;
}

// tfjs keeps views into the buffer it is given; a Node Buffer may be a slice of a shared pool.
function ownBuffer(bytes: Uint8Array): ArrayBuffer {
  return new Uint8Array(bytes).buffer;
}
