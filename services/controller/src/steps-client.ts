/**
 * The controller's cell steps on a cluster: gRPC calls to the dataset-splitter, transplanter
 * and evaluator. One client per service, made once; every call has a deadline.
 */
import { createHash } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import type { Cell, SplitTask } from '@transferlab/experiment';
import { CLIENT_OPTIONS, type ObjectStore, callUnary } from '@transferlab/platform';
import {
  type CellResult,
  type CheckpointRef,
  DatasetSplitterServiceClient,
  EvaluatorServiceClient,
  SplitState,
  Subset,
  TransplanterServiceClient,
} from '@transferlab/proto';
import {
  cellResultFromProto,
  cellToProto,
  checkpointRef,
  halfToProto,
  splitTaskToProto,
} from '@transferlab/proto/mappers';
import { cellKeys } from '@transferlab/runner/cell-store';
import type { CellSteps } from '@transferlab/runner/controller/ports';
import type { StoredResult } from '@transferlab/runner/evaluate-cell';

export interface StepsClientOptions {
  splitterAddress: string;
  transplanterAddress: string;
  evaluatorAddress: string;
  /** The store the services write to: the controller reads checkpoint hashes from it. */
  store: ObjectStore;
  /** Deadlines in ms. Defaults: split 30 min (a large dataset is read once), transplant and evaluate 10 min. */
  deadlines?: { createSplit?: number; transplant?: number; evaluate?: number };
  /** TLS (clientSecurityFromEnv); default plaintext. */
  credentials?: grpc.ChannelCredentials;
  channelOptions?: grpc.ClientOptions;
}

/** The gRPC metadata naming the sweep a call is for (services/evaluator/README.md). */
export const SWEEP_ID_HEADER = 'transferlab-sweep-id';

/** Status codes a retry cannot fix: the request itself is wrong or something it needs is missing. */
const PERMANENT = new Set<grpc.status>([
  grpc.status.INVALID_ARGUMENT,
  grpc.status.NOT_FOUND,
  grpc.status.FAILED_PRECONDITION,
  grpc.status.PERMISSION_DENIED,
  grpc.status.UNIMPLEMENTED,
]);

/** A failed step: the remote service's message with its status name. */
export class StepError extends Error {
  constructor(
    message: string,
    readonly code: grpc.status | undefined,
    /** Read by the controller: a permanent failure is not retried. */
    readonly retryable: boolean,
  ) {
    super(message);
    this.name = 'StepError';
  }
}

function stepError(what: string, address: string, error: unknown): StepError {
  const err = error as Partial<grpc.ServiceError> & Error;
  if (err.code === undefined) return new StepError(`${what}: ${err.message}`, undefined, true);
  const name = grpc.status[err.code] ?? String(err.code);
  const message = err.details || err.message;
  return new StepError(`${what} (${address}): ${name}: ${message}`, err.code, !PERMANENT.has(err.code));
}

export class GrpcCellSteps implements CellSteps {
  private readonly splitter: DatasetSplitterServiceClient;
  private readonly transplanter: TransplanterServiceClient;
  private readonly evaluator: EvaluatorServiceClient;
  private readonly deadlines: Required<NonNullable<StepsClientOptions['deadlines']>>;

  constructor(private readonly options: StepsClientOptions) {
    const credentials = options.credentials ?? grpc.credentials.createInsecure();
    const channel = { ...CLIENT_OPTIONS, ...options.channelOptions };
    this.splitter = new DatasetSplitterServiceClient(options.splitterAddress, credentials, channel);
    this.transplanter = new TransplanterServiceClient(options.transplanterAddress, credentials, channel);
    this.evaluator = new EvaluatorServiceClient(options.evaluatorAddress, credentials, channel);
    this.deadlines = {
      createSplit: options.deadlines?.createSplit ?? 30 * 60_000,
      transplant: options.deadlines?.transplant ?? 10 * 60_000,
      evaluate: options.deadlines?.evaluate ?? 10 * 60_000,
    };
  }

  async createSplit(task: SplitTask): Promise<void> {
    const what = `CreateSplit ${task.id}`;
    const response = await callUnary(
      this.splitter.createSplit.bind(this.splitter),
      { ...splitTaskToProto(task), expectedSplitId: task.id, wait: true },
      { deadlineMs: this.deadlines.createSplit },
    ).catch((error: unknown) => {
      throw stepError(what, this.options.splitterAddress, error);
    });
    const split = response.split;
    if (split?.state !== SplitState.SPLIT_STATE_READY) {
      const why = split?.error || `the split is ${split?.state ?? 'missing from the response'}`;
      throw new StepError(`${what} (${this.options.splitterAddress}): ${why}`, undefined, true);
    }
  }

  async transplant(cell: Cell): Promise<void> {
    const sourceCheckpoint =
      (cell.kind === 'transfer' || cell.kind === 'control') && cell.sourceCellId
        ? await this.checkpointOf(cellKeys.final(cell.sourceCellId))
        : undefined;
    await callUnary(
      this.transplanter.transplant.bind(this.transplanter),
      { cell: cellToProto(cell), sourceCheckpoint },
      { deadlineMs: this.deadlines.transplant },
    ).catch((error: unknown) => {
      throw stepError(`Transplant ${cell.name} (${cell.id})`, this.options.transplanterAddress, error);
    });
  }

  async evaluate(cell: Cell, options: { sweepId: string }): Promise<StoredResult> {
    const what = `Evaluate ${cell.name} (${cell.id})`;
    // EvaluateRequest has no sweep field: the evaluator reads it from this header to publish the evaluation.
    const metadata = new grpc.Metadata();
    metadata.set(SWEEP_ID_HEADER, options.sweepId);
    const response = await callUnary(
      this.evaluator.evaluate.bind(this.evaluator),
      {
        cellId: cell.id,
        checkpoint: await this.checkpointOf(cellKeys.final(cell.id)),
        splitId: cell.splitId,
        half: halfToProto(cell.target),
        subset: Subset.SUBSET_TEST,
      },
      { deadlineMs: this.deadlines.evaluate, metadata },
    ).catch((error: unknown) => {
      throw stepError(what, this.options.evaluatorAddress, error);
    });
    return this.resultOf(what, response.result);
  }

  async measure(cell: Cell): Promise<StoredResult> {
    const what = `Measure ${cell.name} (${cell.id})`;
    const response = await callUnary(
      this.evaluator.measure.bind(this.evaluator),
      { cellId: cell.id },
      {
        deadlineMs: this.deadlines.evaluate,
      },
    ).catch((error: unknown) => {
      throw stepError(what, this.options.evaluatorAddress, error);
    });
    return this.resultOf(what, response.result);
  }

  /** The result the evaluator answered with: it stored it (result.json) before it answered. */
  private resultOf(what: string, result: CellResult | undefined): StoredResult {
    if (!result) throw new StepError(`${what}: the evaluator answered without the cell's result`, undefined, true);
    return cellResultFromProto(result);
  }

  close(): void {
    this.splitter.close();
    this.transplanter.close();
    this.evaluator.close();
  }

  /** A checkpoint reference with its manifest's sha256 (empty when the manifest is absent: the service says so). */
  private async checkpointOf(prefix: string): Promise<CheckpointRef> {
    const ref = checkpointRef(prefix);
    if (!(await this.options.store.stat(ref.key))) return ref;
    const manifest = await this.options.store.get(ref.key);
    return { ...ref, sha256: createHash('sha256').update(manifest).digest('hex') };
  }
}
