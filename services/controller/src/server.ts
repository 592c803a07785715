/**
 * The SweepService over the SweepController: requests are checked and mapped here, the
 * sweep's life is the controller's. createServer is what main.ts serves and what the tests
 * call with embedded ports.
 */
import * as grpc from '@grpc/grpc-js';
import {
  type CellResult as DomainCellResult,
  SpecError,
  type SweepSpec,
  expandGrid,
  parseSpec,
  validateSpec,
} from '@transferlab/experiment';
import { type Logger, type ObjectStore, asServiceError, grpcError, unaryHandler } from '@transferlab/platform';
import {
  type Cell,
  type CancelSweepRequest,
  type CancelSweepResponse,
  type GetReportRequest,
  type GetReportResponse,
  type GetSweepRequest,
  type GetSweepResponse,
  type ListSweepsRequest,
  type ListSweepsResponse,
  ReportDelivery,
  type StartSweepRequest,
  type StartSweepResponse,
  type Sweep,
  type SweepEvent,
  type SweepServiceServer,
  SweepServiceService,
  type WatchSweepRequest,
  type WatchSweepResponse,
} from '@transferlab/proto';
import {
  MapperError,
  cellResultToProto,
  checkpointRef,
  progressToProto,
  sweepSpecFromProto,
} from '@transferlab/proto/mappers';
import { cellKeys, getJson } from '@transferlab/runner/cell-store';
import {
  type CellRecord,
  type SweepRecord,
  FINAL_CELL_STATES,
  isFinalSweep,
} from '@transferlab/runner/controller/records';
import type { SweepController } from '@transferlab/runner/controller/sweep-controller';
import {
  armRowsToProto,
  cellRecordToProto,
  plannedCellToProto,
  sweepStatesFromProto,
  sweepToProto,
} from './mappers.ts';
import { type ReportFileName, REPORT_FILES, isReportFileName, renderReport } from '@transferlab/runner/report';

export const SERVICE_NAME = 'transferlab.v1.SweepService';

export interface ServerDeps {
  controller: SweepController;
  store: ObjectStore;
  log: Logger;
  /** Where relative dataset paths in a spec resolve (TRANSFERLAB_DATA_ROOT); default the working folder. */
  dataDir?: string;
  /** Attempts per cell, each resuming from the cell's last checkpoint (the controller's default: 3). */
  maxAttempts?: number;
  /** An upper bound on the cells a sweep trains at once, whatever its spec says (TRANSFERLAB_MAX_TRAINERS). */
  maxConcurrency?: number;
  /** Aborted at shutdown: open WatchSweep streams end with UNAVAILABLE, so clients reconnect elsewhere. */
  shutdown?: AbortSignal;
}

/** Sweep ids are single subject tokens; anything else cannot name a sweep. */
const SWEEP_ID = /^[-_=A-Za-z0-9]{1,256}$/;
const DEFAULT_PAGE_SIZE = 100;
const MAX_SPEC_FILE_CHARS = 1024;
const MAX_PAGE_SIZE = 1000;

type Snapshot = { sweep: SweepRecord; cells: CellRecord[] };

/** The SweepService implementation, ready for `server.addService(SweepServiceService, ...)`. */
export function createServer(deps: ServerDeps): SweepServiceServer {
  const { controller, store, log } = deps;
  const dataDir = deps.dataDir ?? process.cwd();

  const requireId = (id: string): string => {
    if (!id) throw grpcError(grpc.status.INVALID_ARGUMENT, 'sweep_id: is required');
    if (!SWEEP_ID.test(id)) throw grpcError(grpc.status.NOT_FOUND, `sweep ${id} not found`);
    return id;
  };

  const load = async (id: string): Promise<Snapshot> => {
    const current = await controller.get(requireId(id));
    if (!current) throw grpcError(grpc.status.NOT_FOUND, `sweep ${id} not found`);
    return current;
  };

  const resultOf = async (cellId: string): Promise<DomainCellResult | undefined> =>
    getJson<DomainCellResult>(store, cellKeys.result(cellId));

  /** Cells in dependency order, with their states and, once finished, their results. */
  const cellsToProto = async (records: readonly CellRecord[]): Promise<Cell[]> => {
    const states = new Map(records.map((record) => [record.cell.id, record.state]));
    const cells: Cell[] = [];
    for (const record of records) {
      const result = record.state === 'succeeded' ? await resultOf(record.cell.id) : undefined;
      cells.push(
        cellRecordToProto(record, (id) => states.get(id), {
          result:
            result && cellResultToProto(result, { finalCheckpoint: checkpointRef(cellKeys.final(result.cellId)) }),
        }),
      );
    }
    return cells;
  };

  /** Cells with their states only, for a sweep's counts: no result is read. */
  const statesOf = (records: readonly CellRecord[]): Cell[] => {
    const states = new Map(records.map((record) => [record.cell.id, record.state]));
    return records.map((record) => cellRecordToProto(record, (id) => states.get(id)));
  };

  const snapshotToProto = async (snapshot: Snapshot): Promise<{ sweep: Sweep; cells: Cell[] }> => {
    const cells = await cellsToProto(snapshot.cells);
    return { sweep: sweepToProto(snapshot.sweep, cells), cells };
  };

  const parseRequestSpec = (request: StartSweepRequest): { spec: SweepSpec; specText?: string } => {
    // The name is echoed in every problem: a long one is refused, not repeated.
    if (request.specFile.length > MAX_SPEC_FILE_CHARS) {
      throw grpcError(
        grpc.status.INVALID_ARGUMENT,
        `spec_file: is ${request.specFile.length} characters; at most ${MAX_SPEC_FILE_CHARS}`,
      );
    }
    const file = request.specFile || '<spec>';
    const source = request.specSource;
    try {
      if (source?.$case === 'specText') return { spec: parseSpec(source.value, file), specText: source.value };
      if (source?.$case === 'spec') return { spec: validateSpec(sweepSpecFromProto(source.value), file) };
    } catch (error) {
      if (error instanceof SpecError || error instanceof MapperError) {
        throw grpcError(grpc.status.INVALID_ARGUMENT, error.message);
      }
      throw error;
    }
    throw grpcError(grpc.status.INVALID_ARGUMENT, 'spec_text: is required (or spec, in structured form)');
  };

  async function startSweep(request: StartSweepRequest): Promise<StartSweepResponse> {
    const { spec, specText } = parseRequestSpec(request);
    let plan;
    try {
      plan = expandGrid(spec);
    } catch (error) {
      throw grpcError(grpc.status.INVALID_ARGUMENT, `${request.specFile || '<spec>'}: ${(error as Error).message}`);
    }
    if (request.validateOnly) {
      const now = new Date().toISOString();
      const cells = plan.cells.map(plannedCellToProto);
      const planned: SweepRecord = {
        id: '',
        name: spec.name,
        spec,
        specDir: dataDir,
        state: 'splitting',
        maxAttempts: deps.maxAttempts ?? 3,
        cellIds: plan.cells.map((cell) => cell.id),
        createdAt: now,
        updatedAt: now,
      };
      return { sweep: sweepToProto(planned, cells, { specText }), cells };
    }
    const specLimit = spec.concurrency === 'auto' ? Infinity : spec.concurrency;
    const record = await controller.start(spec, {
      specDir: dataDir,
      specText,
      maxAttempts: deps.maxAttempts,
      concurrency: deps.maxConcurrency === undefined ? undefined : Math.min(specLimit, deps.maxConcurrency),
    });
    log.info({ sweepId: record.id, cells: record.cellIds.length }, 'sweep started');
    const { sweep, cells } = await snapshotToProto(await load(record.id));
    return { sweep, cells };
  }

  async function getSweep(request: GetSweepRequest): Promise<GetSweepResponse> {
    return snapshotToProto(await load(request.sweepId));
  }

  async function listSweeps(request: ListSweepsRequest): Promise<ListSweepsResponse> {
    const wanted = request.states.length > 0 ? sweepStatesFromProto(request.states) : undefined;
    // Newest first; the page token is the position of the last sweep returned, so sweeps
    // started while a client pages do not shift the pages it has not read yet.
    const order = (a: SweepRecord, b: SweepRecord): number =>
      b.createdAt.localeCompare(a.createdAt) || b.id.localeCompare(a.id);
    let sweeps = (await controller.list()).filter((sweep) => !wanted || wanted.has(sweep.state)).sort(order);
    if (request.pageToken) {
      const after = decodePageToken(request.pageToken);
      sweeps = sweeps.filter((sweep) => order(after, sweep) < 0);
    }
    const size = Math.min(request.pageSize || DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE);
    const page = sweeps.slice(0, size);
    const out: Sweep[] = [];
    for (const record of page) {
      const current = await controller.get(record.id);
      if (current) out.push(sweepToProto(current.sweep, statesOf(current.cells)));
    }
    const last = page.at(-1);
    return { sweeps: out, nextPageToken: sweeps.length > size && last ? encodePageToken(last) : '' };
  }

  async function cancelSweep(request: CancelSweepRequest): Promise<CancelSweepResponse> {
    const before = await load(request.sweepId);
    const id = before.sweep.id;
    if (!isFinalSweep(before.sweep.state)) {
      await controller.cancel(id, request.reason);
      log.info({ sweepId: id, reason: request.reason || undefined }, 'sweep cancelled');
    }
    return { sweep: (await snapshotToProto(await load(id))).sweep };
  }

  async function getReport(request: GetReportRequest): Promise<GetReportResponse> {
    const current = await load(request.sweepId);
    const unknown = request.files.filter((name) => !isReportFileName(name));
    if (unknown.length > 0) {
      throw grpcError(
        grpc.status.INVALID_ARGUMENT,
        `files: unknown report file(s) ${unknown.join(', ')} (a report has ${Object.keys(REPORT_FILES).join(', ')})`,
      );
    }
    const id = current.sweep.id;
    const results = await controller.results(id);
    if (results.length === 0) {
      throw grpcError(grpc.status.FAILED_PRECONDITION, `sweep ${id} has no finished cell yet: no report to make`);
    }
    const wanted = new Set<ReportFileName>(
      request.files.length > 0 ? (request.files as ReportFileName[]) : (Object.keys(REPORT_FILES) as ReportFileName[]),
    );
    const complete = current.cells.every((record) => FINAL_CELL_STATES.includes(record.state));
    const rendered = await renderReport(
      {
        spec: current.sweep.spec,
        results,
        extra: {
          sweep: id,
          'sweep state': current.sweep.state,
          'cells finished': `${results.length}/${current.sweep.cellIds.length}`,
        },
      },
      wanted,
    );
    const byStore = request.delivery === ReportDelivery.REPORT_DELIVERY_STORE_KEY;
    const files = [];
    for (const file of rendered.files) {
      const base = { name: file.name, mediaType: file.mediaType, sizeBytes: file.data.length, sha256: file.sha256 };
      if (byStore) {
        const key = `reports/${id}/${file.name}`;
        await store.put(key, file.data, { metadata: { sha256: file.sha256 } });
        files.push({ ...base, content: { $case: 'storeKey' as const, value: key } });
      } else {
        files.push({ ...base, content: { $case: 'data' as const, value: file.data } });
      }
    }
    return {
      report: {
        sweepId: id,
        name: current.sweep.name,
        generatedAt: new Date(),
        complete,
        files,
        arms: armRowsToProto(rendered.aggregate),
        warnings: rendered.aggregate.warnings,
      },
    };
  }

  /** The controller's watch of the sweep (SweepController.watch), each item mapped to the wire. */
  async function watchSweep(call: grpc.ServerWritableStream<WatchSweepRequest, WatchSweepResponse>): Promise<void> {
    const id = requireId(call.request.sweepId);
    if (deps.shutdown?.aborted) throw grpcError(grpc.status.UNAVAILABLE, 'the controller is shutting down');
    if (!(await controller.get(id))) throw grpcError(grpc.status.NOT_FOUND, `sweep ${id} not found`);
    const cancelled = new AbortController();
    const onCancel = (): void => cancelled.abort();
    call.on('cancelled', onCancel);
    const signal = deps.shutdown ? AbortSignal.any([cancelled.signal, deps.shutdown]) : cancelled.signal;
    let sequence = 0;
    const send = (kind: NonNullable<SweepEvent['kind']>): void => {
      if (signal.aborted) return;
      call.write({ event: { sequence: ++sequence, time: new Date(), sweepId: id, kind } });
    };
    try {
      for await (const item of controller.watch(id, signal)) {
        switch (item.kind) {
          case 'snapshot': {
            const cells = await cellsToProto(item.cells);
            send({ $case: 'snapshot', value: { sweep: sweepToProto(item.sweep, cells), cells } });
            break;
          }
          case 'cell': {
            const result = item.record.state === 'succeeded' ? await resultOf(item.record.cell.id) : undefined;
            send({
              $case: 'cell',
              value: cellRecordToProto(item.record, item.stateOf, { result: result && cellResultToProto(result) }),
            });
            break;
          }
          case 'sweep':
            send({ $case: 'sweep', value: sweepToProto(item.sweep, statesOf(item.cells)) });
            break;
          case 'progress':
            send({ $case: 'progress', value: progressToProto(item.cellId, item.report, item.time) });
            break;
        }
      }
    } finally {
      call.off('cancelled', onCancel);
    }
    // Open streams end with UNAVAILABLE at shutdown, so clients reconnect elsewhere.
    if (deps.shutdown?.aborted && !cancelled.signal.aborted) {
      throw grpcError(grpc.status.UNAVAILABLE, 'the controller is shutting down');
    }
  }

  const watchHandler: grpc.handleServerStreamingCall<WatchSweepRequest, WatchSweepResponse> = (call) => {
    watchSweep(call).then(
      () => {
        if (!call.writableEnded) call.end();
      },
      (error: unknown) => {
        call.emit('error', asServiceError(error, log));
      },
    );
  };

  return {
    startSweep: unaryHandler(startSweep, log),
    getSweep: unaryHandler(getSweep, log),
    listSweeps: unaryHandler(listSweeps, log),
    watchSweep: watchHandler,
    cancelSweep: unaryHandler(cancelSweep, log),
    getReport: unaryHandler(getReport, log),
  };
}

/** The registration startGrpcServer takes. */
export function sweepServiceRegistration(implementation: SweepServiceServer): {
  name: string;
  definition: grpc.ServiceDefinition;
  implementation: grpc.UntypedServiceImplementation;
} {
  return { name: SERVICE_NAME, definition: SweepServiceService, implementation };
}

function encodePageToken(sweep: SweepRecord): string {
  return Buffer.from(JSON.stringify([sweep.createdAt, sweep.id])).toString('base64url');
}

function decodePageToken(token: string): SweepRecord {
  try {
    const [createdAt, id] = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as unknown[];
    if (typeof createdAt === 'string' && typeof id === 'string') return { createdAt, id } as SweepRecord;
  } catch {
    // Falls through to the error below.
  }
  throw grpcError(grpc.status.INVALID_ARGUMENT, 'page_token: not a token from a previous ListSweeps response');
}
