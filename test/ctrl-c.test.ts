// Issue 9: Ctrl-C through the README's command (`npm run transferlab -- run ...`) as a terminal
// delivers it: SIGINT to the whole process group (npm, the CLI, its worker processes). One
// Ctrl-C stops at the next batch with a checkpoint, a second quits at once, neither prints a
// crash dump, nothing is left running, and the next run resumes from the checkpoint. A parent
// killed outright leaves no worker training.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO } from './support/servers.ts';

// One base cell of 10,000 MNIST images: an epoch takes far longer than the test waits on wasm
// (on tensorflow one may end first), so an interrupt that waited for the epoch's end would show
// as a checkpoint at batch 0.
const SPEC = `
name: ctrl-c
dataset: { kind: mnist }
split: { kind: random, trainPerClass: 1000, valPerClass: 5, testPerClass: 5 }
net: { kind: small, width: 0.25 }
training: { batchSize: 16, maxEpochs: 2, patience: 2, augment: false, scoreTopK: 1 }
layers: [1]
arms: [baseA]
concurrency: 1
`;

interface Run {
  child: ChildProcess;
  out: () => string;
  err: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
  /** Resolves when stdout has matched. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<void>;
}

function start(command: string, args: string[], options: { detached: boolean }): Run {
  const child = spawn(command, args, { cwd: REPO, detached: options.detached, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  const waiters: Array<{ pattern: RegExp; resolve: () => void }> = [];
  child.stdout!.on('data', (chunk: Buffer) => {
    out += chunk.toString();
    for (const waiter of [...waiters]) {
      if (waiter.pattern.test(out)) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    }
  });
  child.stderr!.on('data', (chunk: Buffer) => void (err += chunk.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal, at: Date.now() })),
  );
  return {
    child,
    out: () => out,
    err: () => err,
    exited,
    waitFor: (pattern, timeoutMs = 240_000) =>
      new Promise<void>((resolve, reject) => {
        if (pattern.test(out)) return resolve();
        const timer = setTimeout(
          () => reject(new Error(`no ${pattern} within ${timeoutMs} ms\nstdout:\n${out}\nstderr:\n${err}`)),
          timeoutMs,
        );
        waiters.push({
          pattern,
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
        });
      }),
  };
}

/** The README's command, in a process group of its own, as a terminal's foreground job. */
const readmeRun = (spec: string, store: string): Run =>
  start('npm', ['run', '--silent', 'transferlab', '--', 'run', spec, '--store', store, '--progress', 'lines'], {
    detached: true,
  });

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Whether any process of the group is still there. */
function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitGone(pgid: number, ms: number): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; await sleep(100)) if (!groupAlive(pgid)) return true;
  return !groupAlive(pgid);
}

interface LoopState {
  cell: string;
  epoch: number;
  nextBatch: number;
  step: number;
}

/**
 * The loop state of a resumable checkpoint: the given cell's, or the first found. The spec has a
 * cell per repeat, trained one after another: once the resumed cell finishes, the next one's
 * checkpoint is not the one the test saved.
 */
async function checkpointState(store: string, only?: string): Promise<LoopState | undefined> {
  const cells = only === undefined ? await readdir(join(store, 'cells')).catch(() => []) : [only];
  for (const cell of cells) {
    const dir = join(store, 'cells', cell, 'checkpoint');
    const manifest = await readFile(join(dir, 'manifest.json'), 'utf8').catch(() => undefined);
    if (!manifest) continue;
    const state = (JSON.parse(manifest) as { objects: { role: string; key: string }[] }).objects.find(
      (object) => object.role === 'state',
    )!;
    return { cell, ...(JSON.parse(await readFile(join(dir, state.key), 'utf8')) as Omit<LoopState, 'cell'>) };
  }
  return undefined;
}

/** What a crash looks like on stderr: a stack, an unhandled error, a minified source line. */
const CRASH = /Error|EPIPE|at .*\(|node:internal|wasm|\{.{200,}/;

let work: string;
let spec: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tl-ctrl-c-'));
  spec = join(work, 'ctrl-c.yaml');
  await writeFile(spec, SPEC);
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('Ctrl-C through npm run transferlab', () => {
  const store = (): string => join(work, 'store');
  let saved: LoopState | undefined;

  it('one Ctrl-C: checkpoint at the next batch, exit 130 (or npm killed by SIGINT), no crash dump, nothing left running', async () => {
    // The cell starts training a few seconds after its 'start' line (TensorFlow.js loads in the
    // worker); an interrupt before its first batch has nothing to checkpoint, so wait longer and
    // try again then.
    for (const delay of [10_000, 20_000, 40_000]) {
      const run = readmeRun(spec, store());
      await run.waitFor(/start\s+baseA seed=1/);
      await sleep(delay);
      const sent = Date.now();
      process.kill(-run.child.pid!, 'SIGINT');
      const exit = await run.exited;
      expect(await waitGone(run.child.pid!, 15_000), 'a process of the group is still running').toBe(true);
      expect(exit.code === 130 || exit.signal === 'SIGINT', `exit ${exit.code} ${exit.signal}`).toBe(true);
      expect(run.out()).toMatch(/interrupted: run the same command again to resume/);
      expect(run.err(), run.err().slice(0, 2000)).not.toMatch(CRASH);
      expect(run.err().length).toBeLessThan(2000);
      saved = await checkpointState(store());
      if (!saved) continue;
      // Mid-epoch: the interrupt took effect at a batch, not at the end of an epoch.
      expect(saved.nextBatch).toBeGreaterThan(0);
      expect(exit.at - sent).toBeLessThan(15_000);
      console.log(`ctrl-c: stopped ${(exit.at - sent) / 1000} s after SIGINT, checkpoint at batch ${saved.nextBatch}`);
      return;
    }
    throw new Error('no interrupt landed while the cell was training');
  }, 600_000);

  it('the next run resumes from that checkpoint; a second Ctrl-C quits at once, still without a dump', async () => {
    expect(saved, 'the first test left a checkpoint').toBeDefined();
    const run = readmeRun(spec, store());
    await run.waitFor(/resume\s+baseA seed=1 from its checkpoint: epoch (\d+), batch (\d+)/);
    const [, epoch, batch] = /from its checkpoint: epoch (\d+), batch (\d+)/.exec(run.out())!;
    expect([Number(epoch) - 1, Number(batch) - 1]).toEqual([saved!.epoch, saved!.nextBatch]);
    await sleep(8000);
    process.kill(-run.child.pid!, 'SIGINT');
    // Past the one-keypress window: a second Ctrl-C, unless the first has finished already.
    await sleep(1100);
    const sent = Date.now();
    let second = true;
    try {
      process.kill(-run.child.pid!, 'SIGINT');
    } catch {
      second = false;
    }
    console.log(`ctrl-c: second Ctrl-C ${second ? 'sent while stopping' : 'not needed: the first had finished'}`);
    const exit = await run.exited;
    expect(exit.code === 130 || exit.signal === 'SIGINT', `exit ${exit.code} ${exit.signal}`).toBe(true);
    expect(exit.at - sent).toBeLessThan(5000);
    expect(await waitGone(run.child.pid!, 15_000), 'a process of the group is still running').toBe(true);
    expect(run.err(), run.err().slice(0, 2000)).not.toMatch(CRASH);
    // On tensorflow the resumed cell may finish its last epoch within the 8 s (its checkpoint
    // then gives way to its result); otherwise its checkpoint has moved on from the saved one.
    const after = await checkpointState(store(), saved!.cell);
    if (after) expect(after.step).toBeGreaterThanOrEqual(saved!.step);
    else
      expect(
        existsSync(join(store(), 'cells', saved!.cell, 'result.json')),
        'the resumed cell has neither a checkpoint nor a result',
      ).toBe(true);
  }, 600_000);
});

describe('a worker whose parent is killed', () => {
  it('checkpoints at its next batch and exits instead of training on', async () => {
    const store = join(work, 'orphan-store');
    const cli = start(
      process.execPath,
      ['--import', 'tsx', 'services/cli/src/main.ts', 'run', spec, '--store', store, '--progress', 'lines'],
      { detached: true },
    );
    await cli.waitFor(/start\s+baseA seed=1/);
    await sleep(15_000);
    const workers = await childrenOf(cli.child.pid!);
    expect(workers.length).toBeGreaterThan(0);
    cli.child.kill('SIGKILL');
    const killed = Date.now();
    for (const pid of workers) {
      for (let alive = true; alive; await sleep(100)) {
        try {
          process.kill(pid, 0);
        } catch {
          alive = false;
        }
        if (Date.now() - killed > 20_000) throw new Error(`worker ${pid} still running 20 s after its parent died`);
      }
    }
    console.log(`orphan: workers gone ${(Date.now() - killed) / 1000} s after the parent's SIGKILL`);
    const state = await checkpointState(store);
    expect(state?.nextBatch ?? 0).toBeGreaterThan(0);
  }, 300_000);
});

/** Child processes of `pid`, from /proc. */
async function childrenOf(pid: number): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    // Fields after the command name (which may hold spaces) start after the last ')'.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (ppid === pid) pids.push(Number(entry));
  }
  return pids;
}
