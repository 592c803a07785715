/**
 * The CLI's gateway to the controller's SweepService: one client per command, a Promise per
 * unary RPC (each with a deadline), and WatchSweep as an async iterator.
 */
import * as grpc from '@grpc/grpc-js';
import {
  CLIENT_OPTIONS,
  DEFAULT_DEADLINE_MS,
  apiTokenFromEnv,
  bearerMetadata,
  callUnary,
  clientSecurityFromEnv,
} from '@transferlab/platform';
import {
  type GetSweepResponse,
  type ListSweepsResponse,
  type Report,
  ReportDelivery,
  type StartSweepResponse,
  type Sweep,
  type SweepEvent,
  SweepServiceClient,
  type SweepState,
  type WatchSweepResponse,
} from '@transferlab/proto';

export const DEFAULT_SERVER = '127.0.0.1:50060';
/** Rendering a report (figures as PNG) takes a while on a large sweep. */
const REPORT_DEADLINE_MS = 10 * 60_000;
/** A watch is re-opened after this, with a fresh snapshot: a stream never hangs on a dead peer for ever. */
export const WATCH_DEADLINE_MS = 60 * 60_000;

export class SweepGateway {
  private readonly client: SweepServiceClient;
  private readonly token: string | undefined;

  /**
   * TLS and the bearer token come from `env` (TRANSFERLAB_TLS_CA_FILE and the other
   * TRANSFERLAB_TLS_* files, TRANSFERLAB_API_TOKEN or TRANSFERLAB_API_TOKEN_FILE); none: plaintext
   * without a token, as against a local controller.
   */
  constructor(
    readonly address: string,
    private readonly options: { deadlineMs?: number; env?: NodeJS.ProcessEnv } = {},
  ) {
    const security = clientSecurityFromEnv(options.env);
    this.token = apiTokenFromEnv(options.env);
    this.client = new SweepServiceClient(address, security.credentials, { ...CLIENT_OPTIONS, ...security.options });
  }

  private get deadlineMs(): number {
    return this.options.deadlineMs ?? DEFAULT_DEADLINE_MS;
  }

  /** Each call's metadata: the bearer token, when there is one. */
  private get metadata(): grpc.Metadata {
    return bearerMetadata(this.token);
  }

  start(request: { specText: string; specFile: string; validateOnly?: boolean }): Promise<StartSweepResponse> {
    return callUnary(
      this.client.startSweep.bind(this.client),
      {
        specSource: { $case: 'specText', value: request.specText },
        specFile: request.specFile,
        validateOnly: request.validateOnly ?? false,
      },
      { deadlineMs: this.deadlineMs, metadata: this.metadata },
    );
  }

  get(sweepId: string): Promise<GetSweepResponse> {
    return callUnary(
      this.client.getSweep.bind(this.client),
      { sweepId },
      { deadlineMs: this.deadlineMs, metadata: this.metadata },
    );
  }

  list(request: { pageSize?: number; pageToken?: string; states?: SweepState[] } = {}): Promise<ListSweepsResponse> {
    return callUnary(
      this.client.listSweeps.bind(this.client),
      { pageSize: request.pageSize ?? 0, pageToken: request.pageToken ?? '', states: request.states ?? [] },
      { deadlineMs: this.deadlineMs, metadata: this.metadata },
    );
  }

  /** Every page, newest first. */
  async listAll(states: SweepState[] = []): Promise<Sweep[]> {
    const sweeps: Sweep[] = [];
    let pageToken = '';
    do {
      const page = await this.list({ pageToken, states });
      sweeps.push(...page.sweeps);
      pageToken = page.nextPageToken;
    } while (pageToken);
    return sweeps;
  }

  async cancel(sweepId: string, reason = ''): Promise<Sweep | undefined> {
    const response = await callUnary(
      this.client.cancelSweep.bind(this.client),
      { sweepId, reason },
      { deadlineMs: this.deadlineMs, metadata: this.metadata },
    );
    return response.sweep;
  }

  async report(sweepId: string, files: string[] = []): Promise<Report | undefined> {
    const response = await callUnary(
      this.client.getReport.bind(this.client),
      { sweepId, delivery: ReportDelivery.REPORT_DELIVERY_INLINE, files },
      { deadlineMs: REPORT_DEADLINE_MS, metadata: this.metadata },
    );
    return response.report;
  }

  /**
   * The sweep's events: a snapshot, then every change, until the sweep is final. Leaving the
   * loop early cancels the call. Errors are the RPC's (NOT_FOUND, DEADLINE_EXCEEDED, ...).
   */
  async *watch(sweepId: string, options: { deadlineMs?: number } = {}): AsyncGenerator<SweepEvent> {
    const call = this.client.watchSweep({ sweepId }, this.metadata, {
      deadline: Date.now() + (options.deadlineMs ?? WATCH_DEADLINE_MS),
    });
    try {
      for await (const message of call as AsyncIterable<WatchSweepResponse>) {
        if (message.event) yield message.event;
      }
    } finally {
      call.cancel();
    }
  }

  close(): void {
    this.client.close();
  }
}

/** The gRPC status of an error from a call, or undefined for any other error. */
export function rpcStatus(error: unknown): grpc.status | undefined {
  const code = (error as Partial<grpc.ServiceError> | undefined)?.code;
  return typeof code === 'number' ? code : undefined;
}

/** The server's message of an RPC error (without grpc-js's `3 INVALID_ARGUMENT:` prefix). */
export function rpcMessage(error: unknown): string {
  const err = error as Partial<grpc.ServiceError> & Error;
  return err.details || err.message;
}
