// The process executor against stand-in trainers: small scripts that behave like
// `trainer run-cell` (exit codes, SIGTERM handling, stderr), so each case runs in well under a
// second. The real trainer through this executor is tested in services/trainer.
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { type Cell, expandGrid, validateSpec } from '@transferlab/experiment';
import { CellRunError } from './ports.ts';
import { ProcessExecutor, TRAINER_ENTRY } from './process-executor.ts';

const cells: Cell[] = expandGrid(
  validateSpec({
    name: 'executor',
    dataset: { kind: 'mnist' },
    net: { kind: 'small', width: 0.25 },
    layers: [1],
    arms: ['baseA', 'baseB'],
    repeats: 1,
  }),
).cells;
const [cellA, cellB] = cells as [Cell, Cell];

/** Stand-in trainers, by behaviour. Each appends `<event> <cell id> <ms>` lines to $FAKE_LOG. */
const SCRIPTS = {
  // Records start and end around a short sleep, and what it was given.
  ok: `
    import { appendFileSync } from 'node:fs';
    const log = (event) => appendFileSync(process.env.FAKE_LOG, event + ' ' + process.argv[4] + ' ' + Date.now() + '\\n');
    log('start');
    log('args=' + process.argv.slice(2).join(',') + ' store=' + process.env.TRANSFERLAB_STORE + ' extra=' + process.env.FAKE_EXTRA);
    setTimeout(() => { log('end'); process.exit(0); }, 300);
  `,
  // Fails like a crashed training: a long stderr, then exit 3.
  crash: `
    for (let i = 1; i <= 30; i++) console.error('stderr line ' + i);
    process.exit(3);
  `,
  // Trains until SIGTERM, then "checkpoints" and exits 143, like the trainer.
  interruptible: `
    process.on('SIGTERM', () => setTimeout(() => process.exit(143), 50));
    console.log('training');
    setInterval(() => {}, 1000);
  `,
  // Ignores SIGTERM: only SIGKILL ends it.
  stuck: `
    process.on('SIGTERM', () => {});
    console.log('training');
    setInterval(() => {}, 1000);
  `,
  // Dies as the kernel's OOM killer would end it.
  oom: `process.kill(process.pid, 'SIGKILL');`,
  // The trainer's "no cell definition" exit.
  usage: `
    console.error('no cell definition at cells/x/cell.json');
    process.exit(2);
  `,
};

let dir: string;
const entry = (name: keyof typeof SCRIPTS): string => join(dir, `${name}.mjs`);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tl-executor-'));
  await Promise.all(Object.entries(SCRIPTS).map(([name, text]) => writeFile(join(dir, `${name}.mjs`), text)));
});

function executor(name: keyof typeof SCRIPTS, options: { maxProcesses?: number; killGraceMs?: number } = {}) {
  const output: string[] = [];
  const instance = new ProcessExecutor({
    maxProcesses: options.maxProcesses ?? 1,
    entry: entry(name),
    env: { FAKE_LOG: join(dir, `${name}.log`), FAKE_EXTRA: 'yes', TRANSFERLAB_STORE: '/the/store' },
    killGraceMs: options.killGraceMs,
    onOutput: (line) => output.push(line),
  });
  return { instance, output };
}

function run(instance: ProcessExecutor, cell: Cell, signal = new AbortController().signal) {
  return instance.run(cell, { sweepId: 'sweep1', attempt: 1, signal });
}

async function until(check: () => boolean): Promise<void> {
  while (!check()) await new Promise((resolve) => setTimeout(resolve, 10));
}

async function failure(promise: Promise<unknown>): Promise<CellRunError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(CellRunError);
  return error as CellRunError;
}

describe('ProcessExecutor', () => {
  it('runs trainers one after another under maxProcesses 1, with the flags and the environment', async () => {
    const { instance } = executor('ok');
    const results = await Promise.all([run(instance, cellA), run(instance, cellB)]);
    expect(results).toEqual(['trained', 'trained']);
    const lines = (await readFile(join(dir, 'ok.log'), 'utf8')).trim().split('\n');
    const events = lines.filter((line) => /^(start|end) /.test(line)).map((line) => line.split(' ').slice(0, 2));
    // Never two at once: each start follows the previous end.
    expect(events).toEqual([
      ['start', cellA.id],
      ['end', cellA.id],
      ['start', cellB.id],
      ['end', cellB.id],
    ]);
    const given = `args=run-cell,--cell-id,${cellA.id},--sweep-id,sweep1,--attempt,1 store=/the/store extra=yes `;
    expect(lines.some((line) => line.startsWith(given))).toBe(true);
    await instance.close();
  });

  it('maps a crash to a CellRunError with the exit code and the last 20 lines of stderr', async () => {
    const { instance, output } = executor('crash');
    const error = await failure(run(instance, cellA));
    expect(error.cellId).toBe(cellA.id);
    expect(error.retryable).toBe(true);
    expect(error.message).toContain(`trainer for cell ${cellA.name} (${cellA.id}), attempt 1 exited with code 3`);
    expect(error.message).toContain('stderr line 30');
    expect(error.message).toContain('stderr line 11');
    expect(error.message).not.toContain('stderr line 10\n');
    expect(error.message).toContain(`run-cell --cell-id ${cellA.id} --sweep-id sweep1 --attempt 1`);
    // Every line still reached the output, not only the tail.
    expect(output).toHaveLength(30);
  });

  it('names SIGKILL as a likely out-of-memory kill', async () => {
    const { instance } = executor('oom');
    const error = await failure(run(instance, cellA));
    expect(error.message).toContain('was killed by SIGKILL (out of memory?)');
    expect(error.message).toContain('(no stderr)');
  });

  it('does not retry a trainer that found no cell definition (exit 2)', async () => {
    const { instance } = executor('usage');
    const error = await failure(run(instance, cellA));
    expect(error.retryable).toBe(false);
    expect(error.message).toContain('exit code 2');
    expect(error.message).toContain('no cell definition at cells/x/cell.json');
  });

  it("resolves 'interrupted' when aborted: SIGTERM, then the trainer's exit 143; a queued run never starts", async () => {
    const { instance, output } = executor('interruptible');
    const controller = new AbortController();
    const running = run(instance, cellA, controller.signal);
    const queued = run(instance, cellB, controller.signal);
    await until(() => output.includes('training'));
    expect(instance.processes).toBe(1);
    controller.abort();
    expect(await running).toBe('interrupted');
    expect(await queued).toBe('interrupted');
    expect(output.filter((line) => line === 'training')).toHaveLength(1);
  });

  it('kills a trainer that ignores SIGTERM after the grace period, and says so', async () => {
    const { instance, output } = executor('stuck', { killGraceMs: 200 });
    const controller = new AbortController();
    const running = run(instance, cellA, controller.signal);
    await until(() => output.includes('training'));
    controller.abort();
    const error = await failure(running);
    expect(error.message).toContain('did not stop within 0.2 s of SIGTERM and was killed');
  });

  it('close() stops running trainers and refuses queued and new runs', async () => {
    const { instance, output } = executor('interruptible');
    const running = run(instance, cellA);
    const queued = failure(run(instance, cellB));
    await until(() => output.includes('training'));
    await instance.close();
    expect(await running).toBe('interrupted');
    expect((await queued).message).toContain('closed before the cell started');
    expect((await failure(run(instance, cellA))).message).toContain('closed');
  });

  it('finds the trainer in this workspace by default', async () => {
    await expect(readFile(TRAINER_ENTRY, 'utf8')).resolves.toContain('run-cell');
  });
});
