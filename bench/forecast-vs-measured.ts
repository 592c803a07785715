// The acceptance check of `transferlab sweep plan` (issue 10, item 5): the forecast wall time
// against a measured one, as a ratio, for the demo and the CPU-sized CIFAR-10 preset. Run it
// on a quiet machine, with the backend the measured run used:
//
//   TRANSFERLAB_BACKEND=tensorflow node_modules/.bin/tsx bench/forecast-vs-measured.ts \
//     [--run-demo | --demo-seconds S] [--cifar-seconds S] [--recalibrate]
//
// --run-demo times `transferlab run` of the demo spec on a fresh store (minutes); --demo-seconds
// and --cifar-seconds take a wall time measured before (e.g. the CIFAR-10 preset's run). Each
// forecast is made for a fresh store (nothing reused, splits prepared), as the measured runs
// started. Exits 1 when a ratio is outside 0.75..1.25.
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CLI = path.join(REPO, 'services/cli/src/main.ts');

function option(args: string[], name: string): string | undefined {
  const at = args.indexOf(name);
  return at >= 0 ? args[at + 1] : undefined;
}

async function forecast(spec: string, recalibrate: boolean): Promise<{ wall: number; backend: string }> {
  const store = await mkdtemp(path.join(os.tmpdir(), 'tl-forecast-'));
  try {
    const args = ['--import', 'tsx', CLI, 'sweep', 'plan', spec, '--store', store, '--json'];
    if (recalibrate) args.push('--recalibrate');
    const { stdout } = await run(process.execPath, args, { cwd: REPO, maxBuffer: 64 << 20 });
    const plan = JSON.parse(stdout) as { wallSeconds: number; calibration: { throughput: { backend: string } } };
    return { wall: plan.wallSeconds, backend: plan.calibration.throughput.backend };
  } finally {
    await rm(store, { recursive: true, force: true });
  }
}

async function timeDemo(): Promise<number> {
  const store = await mkdtemp(path.join(os.tmpdir(), 'tl-demo-'));
  try {
    const start = performance.now();
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', CLI, 'run', 'examples/demo-mnist.yaml', '--store', store, '--progress', 'lines'],
      { cwd: REPO, stdio: ['ignore', 'inherit', 'inherit'] },
    );
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    if (code !== 0) throw new Error(`the demo run exited with ${code}`);
    return (performance.now() - start) / 1000;
  } finally {
    await rm(store, { recursive: true, force: true });
  }
}

async function main(args: string[]): Promise<number> {
  const recalibrate = args.includes('--recalibrate');
  const rows: Array<{ name: string; forecast: number; measured: number; backend: string }> = [];
  console.log(
    `load average at the start: ${os
      .loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')}`,
  );
  const demoSeconds = option(args, '--demo-seconds');
  if (demoSeconds !== undefined || args.includes('--run-demo')) {
    const { wall, backend } = await forecast('examples/demo-mnist.yaml', recalibrate);
    const measured = demoSeconds !== undefined ? Number(demoSeconds) : await timeDemo();
    rows.push({ name: 'demo (examples/demo-mnist.yaml)', forecast: wall, measured, backend });
  }
  const cifarSeconds = option(args, '--cifar-seconds');
  if (cifarSeconds !== undefined) {
    const { wall, backend } = await forecast('examples/cifar10-cpu.yaml', recalibrate);
    rows.push({
      name: 'CIFAR-10 CPU preset (examples/cifar10-cpu.yaml)',
      forecast: wall,
      measured: Number(cifarSeconds),
      backend,
    });
  }
  if (rows.length === 0) {
    console.error('forecast-vs-measured: give --run-demo, --demo-seconds S and/or --cifar-seconds S');
    return 2;
  }
  let outside = 0;
  console.log('| sweep | backend | forecast | measured | forecast / measured (target 0.75..1.25) |');
  console.log('| :-- | :-- | --: | --: | --: |');
  for (const row of rows) {
    const ratio = row.forecast / row.measured;
    if (ratio < 0.75 || ratio > 1.25) outside += 1;
    const min = (s: number): string => `${(s / 60).toFixed(1)} min`;
    console.log(`| ${row.name} | ${row.backend} | ${min(row.forecast)} | ${min(row.measured)} | ${ratio.toFixed(2)} |`);
  }
  console.log(
    `load average at the end: ${os
      .loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')}`,
  );
  return outside > 0 ? 1 : 0;
}

process.exitCode = await main(process.argv.slice(2));
