// `transferlab sweep ...` as a user runs it: the real bin as a child process, against a real
// SweepService on loopback (embedded ports: in-process bus, temporary store, worker processes).
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type TestServer, startTestServer } from '@transferlab/controller/test-server';

const run = promisify(execFile);
const bin = fileURLToPath(new URL('../bin/transferlab.js', import.meta.url));

const TINY = `
name: cli-grpc
dataset: { kind: mnist }
split: { kind: random, trainPerClass: 20, valPerClass: 5, testPerClass: 5 }
net: { kind: small, width: 0.25 }
training: { batchSize: 16, maxEpochs: 1, patience: 1, augment: false, scoreTopK: 1 }
layers: [1, 2]
arms: [baseA, baseB, AnB]
repeats: 1
concurrency: 2
`;

let server: TestServer;
let dir: string;

beforeAll(async () => {
  server = await startTestServer({ workers: 2 });
  dir = await mkdtemp(join(tmpdir(), 'tl-sweep-cli-'));
  await writeFile(join(dir, 'tiny.yaml'), TINY);
});

afterAll(async () => {
  await server?.close();
});

async function transferlab(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const env = { ...process.env, TRANSFERLAB_SERVER: server.address };
  try {
    const { stdout, stderr } = await run(process.execPath, [bin, ...args], { cwd: dir, env, timeout: 120_000 });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('transferlab sweep', () => {
  it('starts a sweep, watches it to the end, lists, gets and fetches its report', async () => {
    const started = await transferlab(['sweep', 'start', '-f', 'tiny.yaml']);
    expect(started.stderr).toContain('started sweep cli-grpc: 4 cells');
    expect(started.code).toBe(0);
    const id = started.stdout.trim();
    expect(id).toMatch(/^cli-grpc-[0-9a-f]{8}$/);

    const watched = await transferlab(['sweep', 'watch', id, '--progress', 'lines', '--server', server.address]);
    expect(watched.code).toBe(0);
    for (const name of ['baseA seed=1', 'baseB seed=1', 'AnB n=1 seed=1', 'AnB n=2 seed=1']) {
      expect(watched.stdout).toMatch(new RegExp(`succeeded +${name.replace('=', '=')}`));
    }
    expect(watched.stdout).toContain('cells: 4 succeeded');
    expect(watched.stdout).toContain(`sweep ${id} succeeded: 4 succeeded`);

    const listed = await transferlab(['sweep', 'list']);
    expect(listed.code).toBe(0);
    expect(listed.stdout).toMatch(new RegExp(`${id} +succeeded +4/4`));

    const got = await transferlab(['sweep', 'get', id]);
    expect(got.code).toBe(0);
    expect(got.stdout).toMatch(/CELL +STATE +ATTEMPTS +SCORE +STATUS OR ERROR/);
    expect(got.stdout).toMatch(/AnB n=2 seed=1 +succeeded +1 +\d\.\d{4}/);

    const report = await transferlab(['sweep', 'report', id, '-o', 'report']);
    expect(report.code).toBe(0);
    expect(report.stdout).toContain(join(dir, 'report', 'index.html'));
    for (const file of ['index.html', 'figure2.svg', 'figure2.png', 'figure3.png', 'cells.csv', 'arms.csv']) {
      expect((await stat(join(dir, 'report', file))).size).toBeGreaterThan(100);
    }
    expect(await readFile(join(dir, 'report', 'index.html'), 'utf8')).toContain('AnB');
    // The report folder holds its inputs, so the local `transferlab report` can redraw it.
    const redraw = await transferlab(['report', 'report']);
    expect(redraw.code).toBe(0);
  });

  it('exits 2 with the server message for a bad spec or a usage error, 1 for an unknown sweep', async () => {
    await writeFile(join(dir, 'bad.yaml'), TINY.replace('maxEpochs: 1', 'maxEpochs: 0'));
    const bad = await transferlab(['sweep', 'start', '-f', 'bad.yaml']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/bad\.yaml:\d+:\d+: training\.maxEpochs: must be > 0/);

    const usage = await transferlab(['sweep', 'start']);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain("required option '-f, --file <spec>' not specified");

    const missing = await transferlab(['sweep', 'get', 'nope-00000000']);
    expect(missing.code).toBe(1);
    expect(missing.stderr.trim()).toBe('sweep nope-00000000 not found');

    const unreachable = await transferlab(['sweep', 'list', '--server', '127.0.0.1:1']);
    expect(unreachable.code).toBe(1);
    expect(unreachable.stderr).toContain('cannot reach the controller at 127.0.0.1:1');
  });
});
