/**
 * TransplanterService: writes the initial net of a transfer cell (first n layers copied from a
 * finished base cell's net, frozen or fine-tuned) or of a random cell (first n layers random
 * and frozen). runner's transplantCell does the work and checks every copied tensor's name and
 * shape; this file checks the request against the stored cell and the store, and maps errors to
 * statuses.
 */
import { createHash } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import { manifestKey } from '@transferlab/data';
import type { Cell } from '@transferlab/experiment';
import { LEARNED_LAYERS } from '@transferlab/nn';
import { type Bus, type Logger, type ObjectStore, grpcError, unaryHandler } from '@transferlab/platform';
import type {
  Cell as CellMessage,
  TransplantRequest,
  TransplantResponse,
  TransplanterServiceServer,
} from '@transferlab/proto';
import {
  MapperError,
  cellIdFromProto,
  cellMismatches,
  checkpointPrefix,
  checkpointRef,
} from '@transferlab/proto/mappers';
import { cellKeys, getJson, transplantCell } from '@transferlab/runner';

export const SERVICE_NAME = 'transferlab.v1.TransplanterService';
export const DEFAULT_PORT = 50062;

export interface TransplanterDeps {
  store: ObjectStore;
  /** Not used: the transplanter answers by RPC only. Accepted so every service is wired the same way. */
  bus?: Bus;
  log: Logger;
}

export function createServer(deps: TransplanterDeps): TransplanterServiceServer {
  const { store, log } = deps;
  // One transplant at a time: TensorFlow.js state is per process, and a second call for the same
  // cell then finds the first one's checkpoint instead of writing it again.
  const serial = serialQueue();

  return {
    transplant: unaryHandler(async (request: TransplantRequest): Promise<TransplantResponse> => {
      const cell = await storedCell(store, request.cell);
      const n = checkTransplantable(cell);
      await checkSplit(store, cell);
      const copies = cell.kind === 'transfer' || cell.kind === 'control';
      if (copies) await checkSource(store, cell, request);
      else if (request.sourceCheckpoint?.key) {
        throw grpcError(
          status.INVALID_ARGUMENT,
          `source_checkpoint: cell ${cell.name} is a random cell: its layers come from no source net`,
        );
      }

      const written = await serial(async () => {
        try {
          return (await transplantCell(store, cell)).written;
        } catch (error) {
          throw statusOfFailure(error as Error);
        }
      });
      const key = `${cellKeys.initial(cell.id)}/manifest.json`;
      log.info({ cellId: cell.id, cell: cell.name, written }, written ? 'transplanted' : 'initial net already there');
      const layers = LEARNED_LAYERS.slice(0, n);
      return {
        initialCheckpoint: checkpointRef(key, await sha256Of(store, key)),
        copiedLayers: copies ? [...layers] : [],
        frozenLayers: cell.mode === 'fine-tuned' ? [] : [...layers],
      };
    }, log),
  };
}

/**
 * The cell the controller stored for the request's id: NOT_FOUND without one, INVALID_ARGUMENT
 * when the request's fields contradict it.
 */
async function storedCell(store: ObjectStore, requested: CellMessage | undefined): Promise<Cell> {
  let id: string;
  try {
    id = cellIdFromProto(requested, 'cell');
  } catch (error) {
    if (error instanceof MapperError) throw grpcError(status.INVALID_ARGUMENT, error.message);
    throw error;
  }
  if (!/^[-_A-Za-z0-9]{1,256}$/.test(id)) throw grpcError(status.INVALID_ARGUMENT, `cell.id: '${id}' is not a cell id`);
  const cell = await getJson<Cell>(store, cellKeys.cell(id));
  if (!cell) {
    throw grpcError(status.NOT_FOUND, `cell ${id}: no cell definition at ${store.describe(cellKeys.cell(id))}`);
  }
  const mismatches = cellMismatches(cell, requested!);
  if (mismatches.length > 0) {
    throw grpcError(status.INVALID_ARGUMENT, `cell ${id} (${cell.name}): ${mismatches.join('; ')}`);
  }
  return cell;
}

/** The cell's n, once it is a transfer or random cell with n in 1..7. */
function checkTransplantable(cell: Cell): number {
  if (cell.kind === 'base') {
    throw grpcError(
      status.INVALID_ARGUMENT,
      `cell.kind: cell ${cell.name} is a base cell: it trains from scratch, there is nothing to transplant`,
    );
  }
  // The equal-budget control keeps every layer of its base net, the classifier included.
  if (cell.kind === 'control') return LEARNED_LAYERS.length;
  const n = cell.n;
  if (n === undefined || !Number.isInteger(n) || n < 1 || n > LEARNED_LAYERS.length - 1) {
    throw grpcError(status.INVALID_ARGUMENT, `cell.n: cell ${cell.name} has n=${n}, expected 1..7`);
  }
  return n;
}

async function checkSplit(store: ObjectStore, cell: Cell): Promise<void> {
  const key = manifestKey(cell.splitId);
  if (!(await store.stat(key))) {
    throw grpcError(
      status.FAILED_PRECONDITION,
      `cell ${cell.name} trains on split ${cell.splitId}, which is not made yet: ${store.describe(key)} is absent`,
    );
  }
}

/** The source cell's trained net must be there, be the one the request names, and match its sha256. */
async function checkSource(store: ObjectStore, cell: Cell, request: TransplantRequest): Promise<void> {
  if (!cell.sourceCellId) {
    throw grpcError(status.INVALID_ARGUMENT, `cell.source_cell_id: transfer cell ${cell.name} names no source cell`);
  }
  const prefix = cellKeys.final(cell.sourceCellId);
  const key = `${prefix}/manifest.json`;
  const ref = request.sourceCheckpoint;
  if (ref?.key && checkpointPrefix(ref) !== prefix) {
    throw grpcError(
      status.INVALID_ARGUMENT,
      `source_checkpoint.key: is ${ref.key}, but cell ${cell.name} copies from the trained net of ` +
        `its source cell ${cell.sourceCellId} at ${key}`,
    );
  }
  if (!(await store.stat(key))) {
    throw grpcError(
      status.FAILED_PRECONDITION,
      `cell ${cell.name} needs the trained net of its source cell ${cell.sourceCellId}: ${store.describe(key)} is absent`,
    );
  }
  if (ref?.sha256) {
    const actual = await sha256Of(store, key);
    if (actual !== ref.sha256) {
      throw grpcError(
        status.FAILED_PRECONDITION,
        `source_checkpoint.sha256: ${store.describe(key)} has sha256 ${actual}, the request expects ${ref.sha256}`,
      );
    }
  }
}

/** A net that does not fit (named tensor) or a corrupt checkpoint is the caller's precondition. */
function statusOfFailure(error: Error): Error {
  if (/^transplant|checkpoint/.test(error.message)) return grpcError(status.FAILED_PRECONDITION, error.message);
  return error;
}

async function sha256Of(store: ObjectStore, key: string): Promise<string> {
  return createHash('sha256')
    .update(await store.get(key))
    .digest('hex');
}

/** Runs tasks one after another, in call order. */
function serialQueue(): <T>(task: () => Promise<T>) => Promise<T> {
  let tail: Promise<unknown> = Promise.resolve();
  return <T>(task: () => Promise<T>): Promise<T> => {
    const run = tail.then(task);
    tail = run.catch(() => undefined);
    return run;
  };
}
