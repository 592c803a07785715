/**
 * `transferlab sweep ...`: the CLI as a client of the controller's SweepService.
 * Exit codes: 0 ok; 1 a failed or cancelled sweep, an unknown sweep, or an RPC error;
 * 2 a usage error or a spec the server rejects (INVALID_ARGUMENT, its message printed).
 */
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { type Cell, type Sweep, SweepState } from '@transferlab/proto';
import { SweepGateway, rpcMessage, rpcStatus } from '../sweep-client.ts';
import { onlyMeasuresText, readSpecForServer } from './sweep-spec.ts';
import { type ProgressMode, countsText, followSweep, isFinalSweepState, stateName } from './sweep-watch.ts';

export const EXIT = { ok: 0, failed: 1, usage: 2 } as const;

/** A mistake in how the command was called (exit code 2). */
export class UsageError extends Error {}

export interface ServerOption {
  server: string;
  /** Files that override their TRANSFERLAB_* variables (see connectionEnv). */
  tokenFile?: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsServerName?: string;
}

/**
 * The environment the gateway reads its TLS files and token from: the process's, with the
 * command's flags in place of their variables. A token file given as a flag replaces a token
 * from TRANSFERLAB_API_TOKEN.
 */
export function connectionEnv(options: ServerOption, env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  return {
    ...env,
    ...(options.tokenFile ? { TRANSFERLAB_API_TOKEN_FILE: options.tokenFile, TRANSFERLAB_API_TOKEN: '' } : {}),
    ...(options.tlsCa ? { TRANSFERLAB_TLS_CA_FILE: options.tlsCa } : {}),
    ...(options.tlsCert ? { TRANSFERLAB_TLS_CERT_FILE: options.tlsCert } : {}),
    ...(options.tlsKey ? { TRANSFERLAB_TLS_KEY_FILE: options.tlsKey } : {}),
    ...(options.tlsServerName ? { TRANSFERLAB_TLS_SERVER_NAME: options.tlsServerName } : {}),
  };
}

/** Runs one command against the server and turns its errors into messages and exit codes. */
async function withGateway(
  options: ServerOption,
  sweepId: string | undefined,
  action: (gateway: SweepGateway) => Promise<number>,
): Promise<number> {
  let gateway: SweepGateway | undefined;
  try {
    gateway = new SweepGateway(options.server, { env: connectionEnv(options) });
    return await action(gateway);
  } catch (error) {
    return reportError(error, options.server, sweepId);
  } finally {
    gateway?.close();
  }
}

function reportError(error: unknown, server: string, sweepId: string | undefined): number {
  const status = rpcStatus(error);
  switch (status) {
    case undefined:
      console.error(`transferlab: ${(error as Error).message}`);
      return error instanceof UsageError ? EXIT.usage : EXIT.failed;
    case grpc.status.INVALID_ARGUMENT:
      console.error(rpcMessage(error));
      return EXIT.usage;
    case grpc.status.NOT_FOUND:
      console.error(sweepId ? `sweep ${sweepId} not found` : rpcMessage(error));
      return EXIT.failed;
    case grpc.status.UNAUTHENTICATED:
      console.error(
        `transferlab: the controller at ${server} refused the call: ${rpcMessage(error)} (the token comes from TRANSFERLAB_API_TOKEN, TRANSFERLAB_API_TOKEN_FILE or --token-file)`,
      );
      return EXIT.failed;
    case grpc.status.UNAVAILABLE:
      console.error(`transferlab: cannot reach the controller at ${server}: ${rpcMessage(error)}`);
      return EXIT.failed;
    default:
      console.error(`transferlab: ${grpc.status[status] ?? status}: ${rpcMessage(error)}`);
      return EXIT.failed;
  }
}

const isoSeconds = (date: Date | undefined): string => (date ? date.toISOString().replace(/\.\d+Z$/, 'Z') : '-');

/** Columns padded to their widest cell; the last column is not padded. */
export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => (row[i] ?? '').length)));
  return rows
    .map((row) =>
      row
        .map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

function finishedCount(sweep: Sweep): number {
  return sweep.counts
    .filter((count) => count.state === 'CELL_STATE_SUCCEEDED' || count.state === 'CELL_STATE_REUSED')
    .reduce((sum, count) => sum + count.count, 0);
}

function summary(sweep: Sweep): string {
  const error = sweep.error ? `\n  ${sweep.error}` : '';
  return `sweep ${sweep.id} ${stateName(sweep.state)}: ${countsText(sweep.counts)}${error}`;
}

async function watchToEnd(gateway: SweepGateway, sweepId: string, mode: ProgressMode): Promise<number> {
  const { sweep, failed } = await followSweep(gateway, sweepId, { mode });
  const final = sweep && isFinalSweepState(sweep.state) ? sweep : (await gateway.get(sweepId)).sweep;
  if (!final) return EXIT.failed;
  for (const cell of failed) console.error(`failed: ${cell.name}: ${cell.error}`);
  console.log(summary(final));
  return final.state === SweepState.SWEEP_STATE_SUCCEEDED ? EXIT.ok : EXIT.failed;
}

const defaultMode = (mode: ProgressMode | undefined): ProgressMode => mode ?? (process.stderr.isTTY ? 'bars' : 'lines');

export async function sweepStart(
  options: ServerOption & {
    file: string;
    watch?: boolean;
    dryRun?: boolean;
    progress?: ProgressMode;
    onlyMeasures?: boolean;
  },
): Promise<number> {
  return withGateway(options, undefined, async (gateway) => {
    let spec;
    try {
      spec = await readSpecForServer(options.file);
    } catch (error) {
      throw new UsageError((error as Error).message);
    }
    const response = await gateway.start({
      specText: options.onlyMeasures ? onlyMeasuresText(spec.text) : spec.text,
      specFile: spec.specFile,
      validateOnly: options.dryRun,
    });
    const sweep = response.sweep!;
    if (options.dryRun) {
      console.log(`spec ${spec.specFile} is valid: sweep ${sweep.name}, ${response.cells.length} cells`);
      console.log(cellTable(response.cells, { progress: false }));
      return EXIT.ok;
    }
    // The id alone on stdout, so that `ID=$(transferlab sweep start -f spec.yaml)` works.
    console.log(sweep.id);
    console.error(
      `started sweep ${sweep.name}: ${response.cells.length} cells` +
        (options.watch ? '' : `; follow it with: transferlab sweep watch ${sweep.id}`),
    );
    if (!options.watch) return EXIT.ok;
    return watchToEnd(gateway, sweep.id, defaultMode(options.progress));
  });
}

export async function sweepWatch(id: string, options: ServerOption & { progress?: ProgressMode }): Promise<number> {
  return withGateway(options, id, (gateway) => watchToEnd(gateway, id, defaultMode(options.progress)));
}

export async function sweepList(options: ServerOption & { state?: string[] }): Promise<number> {
  return withGateway(options, undefined, async (gateway) => {
    const states = (options.state ?? []).map((name) => {
      const state = `SWEEP_STATE_${name.toUpperCase()}` as SweepState;
      if (!Object.values(SweepState).includes(state) || state === SweepState.SWEEP_STATE_UNSPECIFIED) {
        throw new UsageError(
          `unknown state '${name}' (expected pending, running, succeeded, failed, cancelling or cancelled)`,
        );
      }
      return state;
    });
    const sweeps = await gateway.listAll(states);
    if (sweeps.length === 0) {
      console.log('no sweeps');
      return EXIT.ok;
    }
    const rows = [['SWEEP', 'STATE', 'CELLS DONE', 'CREATED']];
    for (const sweep of sweeps) {
      rows.push([
        sweep.id,
        stateName(sweep.state),
        `${finishedCount(sweep)}/${sweep.totalCells}`,
        isoSeconds(sweep.createdAt),
      ]);
    }
    console.log(table(rows));
    return EXIT.ok;
  });
}

function cellTable(cells: Cell[], options: { progress: boolean }): string {
  const rows = [options.progress ? ['CELL', 'STATE', 'ATTEMPTS', 'SCORE', 'STATUS OR ERROR'] : ['CELL', 'ID']];
  for (const cell of cells) {
    if (!options.progress) {
      rows.push([cell.name, cell.id.slice(0, 12)]);
      continue;
    }
    const measures = cell.result?.measures ?? [];
    // A measure cell has no score: its numbers are CKA(baseA, baseB) per layer, shown instead.
    const score = cell.result && Number.isFinite(cell.result.score) ? cell.result.score.toFixed(4) : '-';
    // A running cell's executor status (e.g. why its pod waits) says more than an old error.
    const note =
      measures.length > 0 && !cell.error
        ? `CKA(A,B) ${measures.map((m) => `${m.layer} ${m.ckaSourceTarget.toFixed(2)}`).join(' ')}`
        : (cell.status && !cell.result ? cell.status : cell.error).replace(/\s+/g, ' ');
    rows.push([cell.name, stateName(cell.state), String(cell.attempts), score, note]);
  }
  return table(rows);
}

export async function sweepGet(id: string, options: ServerOption): Promise<number> {
  return withGateway(options, id, async (gateway) => {
    const { sweep, cells } = await gateway.get(id);
    console.log(summary(sweep!));
    console.log(`created ${isoSeconds(sweep!.createdAt)}, updated ${isoSeconds(sweep!.updatedAt)}`);
    console.log('');
    console.log(cellTable(cells, { progress: true }));
    return EXIT.ok;
  });
}

export async function sweepCancel(id: string, options: ServerOption & { reason?: string }): Promise<number> {
  return withGateway(options, id, async (gateway) => {
    const sweep = await gateway.cancel(id, options.reason);
    console.log(summary(sweep!));
    return EXIT.ok;
  });
}

/** Writes the report's files into `dir`, swapped in whole as `transferlab run` does. */
export async function sweepReport(id: string, options: ServerOption & { out: string }): Promise<number> {
  return withGateway(options, id, async (gateway) => {
    const report = await gateway.report(id);
    const dir = resolve(options.out);
    const staging = `${dir}.writing-${process.pid}`;
    await rm(staging, { recursive: true, force: true });
    await mkdir(staging, { recursive: true });
    for (const file of report!.files) {
      if (file.content?.$case !== 'data') throw new Error(`report file ${file.name} came without its bytes`);
      await writeFile(join(staging, file.name), file.content.value);
    }
    const old = `${dir}.old-${process.pid}`;
    await rename(dir, old).catch(() => undefined);
    await rename(staging, dir);
    await rm(old, { recursive: true, force: true });
    for (const warning of report!.warnings) console.log(`warning: ${warning}`);
    if (!report!.complete) console.log('note: the sweep has not finished: this report covers the cells done so far');
    console.log(`report: ${join(dir, 'index.html')}`);
    return EXIT.ok;
  });
}
