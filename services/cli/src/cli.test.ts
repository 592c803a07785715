// The `transferlab` command as a user runs it: a child process, its exit code, its files.
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const bin = fileURLToPath(new URL('../bin/transferlab.js', import.meta.url));

async function transferlab(args: string[], cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [bin, ...args], { cwd, timeout: 180_000 });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

const TINY = `
name: cli-tiny
dataset: { kind: mnist }
split: { kind: random, trainPerClass: 30, valPerClass: 10, testPerClass: 10 }
net: { kind: small, width: 0.25 }
training: { batchSize: 16, maxEpochs: 1, patience: 1, augment: false, scoreTopK: 1 }
layers: [1, 2]
arms: [baseA, baseB, AnB, BnB+]
repeats: 1
concurrency: 2
`;

describe('transferlab CLI', () => {
  it('runs a sweep to a report, then redraws the report from stored results', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tl-cli-'));
    await writeFile(join(dir, 'tiny.yaml'), TINY);
    const first = await transferlab(
      ['run', 'tiny.yaml', '--store', 'store', '--out', 'report', '--progress', 'lines'],
      dir,
    );
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(/6\/6 cells finished \(6 trained now\)/);
    for (const file of [
      'index.html',
      'figure2.svg',
      'figure2.png',
      'figure3.png',
      'cells.csv',
      'arms.csv',
      'report.json',
    ]) {
      expect((await stat(join(dir, 'report', file))).size).toBeGreaterThan(100);
    }
    const html = await readFile(join(dir, 'report', 'index.html'), 'utf8');
    expect(html).toContain('AnB');
    expect(html).toContain('<svg');

    const again = await transferlab(
      ['run', 'tiny.yaml', '--store', 'store', '--out', 'report', '--progress', 'lines'],
      dir,
    );
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/6\/6 cells finished \(0 trained now\)/);

    const redraw = await transferlab(['report', 'report'], dir);
    expect(redraw.code).toBe(0);
    expect(redraw.stdout).toContain(join(dir, 'report', 'index.html'));

    // A dissimilar-split finding needs two sweeps that differ only in their halves' classes.
    const inputs = JSON.parse(await readFile(join(dir, 'report', 'inputs.json'), 'utf8'));
    inputs.spec.training.maxEpochs = 2;
    await mkdir(join(dir, 'longer'));
    await writeFile(join(dir, 'longer', 'inputs.json'), JSON.stringify(inputs));
    const mismatched = await transferlab(['report', 'report', '--random-split', 'longer'], dir);
    expect(mismatched.code).not.toBe(0);
    expect(mismatched.stderr).toContain("split.kind: this sweep's is 'random', not a dissimilar ('groups') split");
    expect(mismatched.stderr).toContain('training.maxEpochs: 1 here, 2 in the random-split sweep');
  });

  it('names the field and line of a bad spec and exits non-zero without creating a store', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tl-cli-'));
    await writeFile(join(dir, 'bad.yaml'), TINY.replace('maxEpochs: 1', 'maxEpochs: 0').replace('AnB,', 'AnC,'));
    const result = await transferlab(['run', 'bad.yaml', '--store', 'store'], dir);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/bad\.yaml:\d+:\d+: training\.maxEpochs/);
    expect(result.stderr).toMatch(/arms\[2\]: unknown arm 'AnC'/);
    await expect(stat(join(dir, 'store'))).rejects.toThrow();
  });

  it('reports a missing report folder clearly', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tl-cli-'));
    const result = await transferlab(['report', 'nowhere'], dir);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/nowhere\/inputs.json: not found/);
  });
});
