/**
 * transferlab's Grafana dashboards as code (@grafana/grafana-foundation-sdk), and every PromQL
 * expression they hold as a Prometheus recording rule, so `promtool check rules` validates
 * them and the telemetry test evaluates them against a real Prometheus. Metric and label names
 * come from the telemetry registry (packages/platform/src/telemetry-attributes.ts).
 *
 * `pnpm dashboards` writes deploy/grafana/<uid>.json, the same files into
 * charts/transferlab/dashboards/ (the chart's ConfigMaps), and
 * deploy/prometheus/dashboard-expressions.rules.yaml; `--check` only compares, and exits 1
 * when a committed file differs (test/dashboards.test.ts does the same).
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as common from '@grafana/grafana-foundation-sdk/common';
import { PanelBuilder as BarChartPanelBuilder } from '@grafana/grafana-foundation-sdk/barchart';
import * as dashboard from '@grafana/grafana-foundation-sdk/dashboard';
import * as prometheus from '@grafana/grafana-foundation-sdk/prometheus';
import { PanelBuilder as StatPanelBuilder } from '@grafana/grafana-foundation-sdk/stat';
import { PanelBuilder as TablePanelBuilder } from '@grafana/grafana-foundation-sdk/table';
import { PanelBuilder as TimeseriesPanelBuilder } from '@grafana/grafana-foundation-sdk/timeseries';
import { LABELS, PROM } from '@transferlab/platform/telemetry-attributes';
import { format, resolveConfig } from 'prettier';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
export const DASHBOARD_DIRS = ['deploy/grafana', 'charts/transferlab/dashboards'] as const;
export const RULES_FILE = 'deploy/prometheus/dashboard-expressions.rules.yaml';

const DATASOURCE: common.DataSourceRef = { type: 'prometheus', uid: '${datasource}' };

/**
 * What each Grafana variable stands for when the dashboards' expressions are checked outside
 * Grafana: its "All" value. Generation fails on a variable missing here.
 */
// $__range: Grafana's own variable, the dashboard's time range.
const VARIABLE_VALUES: Record<string, string> = { sweep: '.+', arm: '.+', service: '.+', __range: '1h' };

// ------------------------------------------------------------------ building blocks

const m = PROM;
/**
 * NVIDIA's DCGM exporter (the GPU Operator installs it): not transferlab's metrics, so not in the
 * registry. With its Kubernetes mapping on (the default there), each GPU's series carry the
 * namespace, pod and container using it; trainer pods are `tl-<sweep>-...`, container `trainer`.
 */
export const DCGM = {
  /** GPU utilisation, percent. */
  gpuUtil: 'DCGM_FI_DEV_GPU_UTIL',
  /** Frame buffer (GPU memory) used, MiB. */
  framebufferUsed: 'DCGM_FI_DEV_FB_USED',
} as const;
const TRAINER_GPUS = { container: 'trainer', pod: 'tl-$sweep-.+' };
/** A selector: `=~` for variables and alternatives, `=` otherwise; `extra` adds raw matchers. */
const sel = (labels: Record<string, string>, extra: string[] = []): string =>
  `{${[
    ...Object.entries(labels).map(
      ([name, value]) => `${name}${value.includes('$') || /[|.*+]/.test(value) ? '=~' : '='}"${value}"`,
    ),
    ...extra,
  ].join(',')}}`;
const SWEEP = { [LABELS.sweep]: '$sweep' };
const CELL_FILTER = { [LABELS.sweep]: '$sweep', [LABELS.arm]: '$arm' };
/** Histograms carry no sweep id (telemetry-attributes.ts): they are filtered by arm only. */
const ARM_FILTER = { [LABELS.arm]: '$arm' };
const SERVICE = { [LABELS.service]: '$service' };
const ACTIVE_STATES = 'pending|transplanting|training|evaluating';
const FINAL_STATES = 'succeeded|failed|blocked|cancelled';
const RPC_BY = 'rpc_service, rpc_method';

interface Query {
  expr: string;
  legend?: string;
  /** Instant (stat, table, bar chart: the value now) or range (time series: over the time range). */
  instant?: boolean;
  table?: boolean;
}

function target(query: Query, index: number): prometheus.DataqueryBuilder {
  const builder = new prometheus.DataqueryBuilder()
    .datasource(DATASOURCE)
    .refId(String.fromCharCode(65 + index))
    .expr(query.expr);
  if (query.legend !== undefined) builder.legendFormat(query.legend);
  if (query.instant) builder.instant();
  else builder.range();
  if (query.table) builder.format(prometheus.PromQueryFormat.Table);
  return builder;
}

interface PanelOptions {
  title: string;
  description: string;
  queries: Query[];
  unit?: string;
  width?: number;
  height?: number;
}

function timeseries(options: PanelOptions & { stack?: boolean; min?: number; max?: number }) {
  const panel = new TimeseriesPanelBuilder()
    .title(options.title)
    .description(options.description)
    .datasource(DATASOURCE)
    .unit(options.unit ?? 'short')
    .span(options.width ?? 12)
    .height(options.height ?? 8)
    .legend(
      new common.VizLegendOptionsBuilder()
        .showLegend(true)
        .displayMode(common.LegendDisplayMode.List)
        .placement(common.LegendPlacement.Bottom),
    )
    .tooltip(
      new common.VizTooltipOptionsBuilder().mode(common.TooltipDisplayMode.Multi).sort(common.SortOrder.Descending),
    )
    .targets(options.queries.map(target));
  if (options.stack) {
    panel.stacking(new common.StackingConfigBuilder().mode(common.StackingMode.Normal)).fillOpacity(30);
  }
  if (options.min !== undefined) panel.min(options.min);
  if (options.max !== undefined) panel.max(options.max);
  return panel;
}

function stat(options: PanelOptions & { decimals?: number }) {
  const panel = new StatPanelBuilder()
    .title(options.title)
    .description(options.description)
    .datasource(DATASOURCE)
    .unit(options.unit ?? 'short')
    .span(options.width ?? 6)
    .height(options.height ?? 5)
    .graphMode(common.BigValueGraphMode.None)
    .colorMode(common.BigValueColorMode.Value)
    .reduceOptions(new common.ReduceDataOptionsBuilder().calcs(['lastNotNull']).values(false))
    .targets(options.queries.map((query, index) => target({ ...query, instant: true }, index)));
  if (options.decimals !== undefined) panel.decimals(options.decimals);
  return panel;
}

function table(options: PanelOptions & { transformations: dashboard.DataTransformerConfig[] }) {
  return new TablePanelBuilder()
    .title(options.title)
    .description(options.description)
    .datasource(DATASOURCE)
    .unit(options.unit ?? 'short')
    .span(options.width ?? 12)
    .height(options.height ?? 8)
    .cellOptions({ type: common.TableCellDisplayMode.ColorBackground })
    .targets(options.queries.map((query, index) => target({ ...query, instant: true, table: true }, index)))
    .transformations(options.transformations);
}

function sweepVariable(): dashboard.QueryVariableBuilder {
  return new dashboard.QueryVariableBuilder('sweep')
    .label('Sweep')
    .datasource(DATASOURCE)
    .query(`label_values(${m.cells}, ${LABELS.sweep})`)
    .definition(`label_values(${m.cells}, ${LABELS.sweep})`)
    .refresh(dashboard.VariableRefresh.OnTimeRangeChanged)
    .sort(dashboard.VariableSort.AlphabeticalDesc)
    .multi(true)
    .includeAll(true)
    .allValue('.+');
}

function base(uid: string, title: string, description: string): dashboard.DashboardBuilder {
  return new dashboard.DashboardBuilder(title)
    .uid(uid)
    .description(description)
    .tags(['transferlab'])
    .editable()
    .tooltip(dashboard.DashboardCursorSync.Crosshair)
    .time({ from: 'now-6h', to: 'now' })
    .refresh('30s')
    .link(
      new dashboard.DashboardLinkBuilder('transferlab')
        .type(dashboard.DashboardLinkType.Dashboards)
        .tags(['transferlab'])
        .asDropdown(true)
        .includeVars(true)
        .keepTime(true),
    )
    .withVariable(new dashboard.DatasourceVariableBuilder('datasource').label('Prometheus').type('prometheus'));
}

// ------------------------------------------------------------------ the dashboards

function sweepOverview(): dashboard.DashboardBuilder {
  const remaining = `sum by (${LABELS.sweep}) (${m.cells}${sel({ ...SWEEP, [LABELS.state]: ACTIVE_STATES })})`;
  // Cells finishing per second: the slope of the finished count over the last 30 minutes (a
  // regression over the gauge's samples, so a sweep younger than the window counts right).
  const finished = (by: string) =>
    `sum by (${by}) (deriv(${m.cells}${sel({ ...SWEEP, [LABELS.state]: 'succeeded|failed' })}[30m]))`;
  const finishRate = finished(LABELS.sweep);
  return base(
    'transferlab-sweep-overview',
    'transferlab / Sweep overview',
    'Cells by state, throughput and an ETA for each sweep the controller drives.',
  )
    .withVariable(sweepVariable())
    .withRow(new dashboard.RowBuilder('Progress'))
    .withPanel(
      stat({
        title: 'Cells by state',
        description: 'Cells of the selected sweeps in each state, now.',
        queries: [{ expr: `sum by (${LABELS.state}) (${m.cells}${sel(SWEEP)})`, legend: `{{${LABELS.state}}}` }],
        width: 12,
      }),
    )
    .withPanel(
      stat({
        title: 'Done',
        description: 'Share of cells in a final state (succeeded, failed, blocked or cancelled).',
        queries: [
          {
            expr: `sum by (${LABELS.sweep}) (${m.cells}${sel({ ...SWEEP, [LABELS.state]: FINAL_STATES })}) / sum by (${LABELS.sweep}) (${m.cells}${sel(SWEEP)})`,
            legend: `{{${LABELS.sweep}}}`,
          },
        ],
        unit: 'percentunit',
        decimals: 0,
      }),
    )
    .withPanel(
      stat({
        title: 'ETA',
        description:
          'Cells not yet finished divided by the rate cells succeeded or failed over the last 30 minutes. Rough: base cells train longer than transfer cells, and the order of the grid is not taken into account.',
        queries: [{ expr: `${remaining} / (${finishRate} > 0)`, legend: `{{${LABELS.sweep}}}` }],
        unit: 's',
      }),
    )
    .withPanel(
      timeseries({
        title: 'Cells by state over time',
        description: 'How the sweep moved through its states.',
        queries: [{ expr: `sum by (${LABELS.state}) (${m.cells}${sel(SWEEP)})`, legend: `{{${LABELS.state}}}` }],
        stack: true,
      }),
    )
    .withPanel(
      timeseries({
        title: 'Queue depth',
        description: 'Pending cells whose dependencies all succeeded, waiting for a free slot (the concurrency limit).',
        queries: [{ expr: `${m.queueDepth}${sel(SWEEP)}`, legend: `{{${LABELS.sweep}}}` }],
      }),
    )
    .withRow(new dashboard.RowBuilder('Throughput'))
    .withPanel(
      timeseries({
        title: 'Cells finished per hour',
        description: 'Rate at which cells succeed or fail, over the last 30 minutes, by state.',
        queries: [
          {
            expr: `3600 * ${finished(`${LABELS.sweep}, ${LABELS.state}`)}`,
            legend: `{{${LABELS.sweep}}} {{${LABELS.state}}}`,
          },
        ],
      }),
    )
    .withPanel(
      timeseries({
        title: 'Training throughput',
        description: 'Images per second over every running cell of the sweep.',
        queries: [
          {
            expr: `sum by (${LABELS.sweep}) (${m.imagesPerSecond}${sel(SWEEP)})`,
            legend: `{{${LABELS.sweep}}}`,
          },
        ],
        unit: 'short',
      }),
    )
    .withPanel(
      timeseries({
        title: 'Cell duration by arm (median, 90th percentile)',
        description:
          'From the first attempt to succeeded or failed, retries included, over the cells of every sweep that finished in the time range (the histogram carries no sweep id, so its series stay bounded).',
        queries: [
          {
            expr: `histogram_quantile(0.5, sum by (le, ${LABELS.arm}) (increase(${m.cellDuration}_bucket[$__range])))`,
            legend: `{{${LABELS.arm}}} p50`,
          },
          {
            expr: `histogram_quantile(0.9, sum by (le, ${LABELS.arm}) (increase(${m.cellDuration}_bucket[$__range])))`,
            legend: `{{${LABELS.arm}}} p90`,
          },
        ],
        unit: 's',
        width: 24,
      }),
    );
}

function trainingCurves(): dashboard.DashboardBuilder {
  const legend = `{{${LABELS.arm}}} n={{${LABELS.n}}} seed={{${LABELS.seed}}}`;
  return base(
    'transferlab-training-curves',
    'transferlab / Training curves',
    'Loss, validation top-1 and throughput of each running cell (one line per arm, n and seed), and the trainers’ epoch and checkpoint times.',
  )
    .withVariable(sweepVariable())
    .withVariable(
      new dashboard.QueryVariableBuilder('arm')
        .label('Arm')
        .datasource(DATASOURCE)
        .query(`label_values(${m.trainingLoss}{${LABELS.sweep}=~"$sweep"}, ${LABELS.arm})`)
        .definition(`label_values(${m.trainingLoss}{${LABELS.sweep}=~"$sweep"}, ${LABELS.arm})`)
        .refresh(dashboard.VariableRefresh.OnTimeRangeChanged)
        .sort(dashboard.VariableSort.AlphabeticalAsc)
        .multi(true)
        .includeAll(true)
        .allValue('.+'),
    )
    .withPanel(
      timeseries({
        title: 'Training loss',
        description: 'Loss of the latest batch, per running cell.',
        queries: [{ expr: `${m.trainingLoss}${sel(CELL_FILTER)}`, legend }],
      }),
    )
    .withPanel(
      timeseries({
        title: 'Validation top-1',
        description: 'Top-1 accuracy on the validation set after each epoch, per running cell.',
        queries: [{ expr: `${m.validationTop1}${sel(CELL_FILTER)}`, legend }],
        unit: 'percentunit',
        min: 0,
        max: 1,
      }),
    )
    .withPanel(
      timeseries({
        title: 'Images per second',
        description: 'Training throughput of the latest batch, per running cell.',
        queries: [{ expr: `${m.imagesPerSecond}${sel(CELL_FILTER)}`, legend }],
      }),
    )
    .withPanel(
      timeseries({
        title: 'Epoch time by arm (90th percentile)',
        description: 'Time of one epoch, its validation included, over the epochs of the running cells.',
        queries: [
          {
            expr: `histogram_quantile(0.9, sum by (le, ${LABELS.arm}) (${m.epochDuration}_bucket${sel(ARM_FILTER)}))`,
            legend: `{{${LABELS.arm}}}`,
          },
        ],
        unit: 's',
      }),
    )
    .withPanel(
      timeseries({
        title: 'Checkpoint size (90th percentile)',
        description:
          'Bytes of each checkpoint the running cells wrote to the object store (resumable checkpoints and final nets).',
        queries: [
          {
            expr: `histogram_quantile(0.9, sum by (le, ${LABELS.arm}) (${m.checkpointSize}_bucket${sel(ARM_FILTER)}))`,
            legend: `{{${LABELS.arm}}}`,
          },
        ],
        unit: 'bytes',
      }),
    )
    .withPanel(
      timeseries({
        title: 'Checkpoint latency (90th percentile)',
        description: 'Time to serialize and store one checkpoint, over the checkpoints of the running cells.',
        queries: [
          {
            expr: `histogram_quantile(0.9, sum by (le, ${LABELS.arm}) (${m.checkpointDuration}_bucket${sel(ARM_FILTER)}))`,
            legend: `{{${LABELS.arm}}}`,
          },
        ],
        unit: 's',
      }),
    )
    .withRow(new dashboard.RowBuilder('GPUs (DCGM exporter)'))
    .withPanel(
      timeseries({
        title: 'GPU utilisation per trainer',
        description:
          'Percent of time each trainer pod’s GPU was busy, from NVIDIA’s DCGM exporter (empty without it, e.g. on CPU-only clusters). A trainer far below 100% waits on its input pipeline or the CPU.',
        queries: [{ expr: `avg by (pod, gpu) (${DCGM.gpuUtil}${sel(TRAINER_GPUS)})`, legend: '{{pod}} GPU {{gpu}}' }],
        unit: 'percent',
        min: 0,
        max: 100,
      }),
    )
    .withPanel(
      timeseries({
        title: 'GPU memory used per trainer',
        description:
          'GPU memory (frame buffer) each trainer pod uses, from NVIDIA’s DCGM exporter. TensorFlow takes all of it unless TF_FORCE_GPU_ALLOW_GROWTH is set (values-gpu.yaml sets it).',
        queries: [
          { expr: `sum by (pod, gpu) (${DCGM.framebufferUsed}${sel(TRAINER_GPUS)})`, legend: '{{pod}} GPU {{gpu}}' },
        ],
        unit: 'mbytes',
        min: 0,
      }),
    );
}

/**
 * Figure 2 plots top-1 against n, one line per arm. Grafana draws time on the x axis of a time
 * series and cannot put a label there, so the live figure is the latest score of each finished
 * cell (an instant query), averaged over seeds and pivoted into an arm × n matrix: a bar chart
 * grouped by n with one bar per arm (the paper's lines become bar colours; base arms sit at
 * n = 0), and the same matrix as a table. The report draws the real figure with confidence
 * intervals.
 */
function figure2(): dashboard.DashboardBuilder {
  const mean = `avg by (${LABELS.arm}, ${LABELS.n}) (${m.cellScore}${sel(SWEEP)})`;
  const hideTime = { id: 'organize', options: { excludeByName: { Time: true, __name__: true } } };
  return base(
    'transferlab-figure-2',
    'transferlab / Figure 2 (live)',
    'Top-1 (the paper’s score: mean of the best validation top-1 values) against n, per arm, as cells finish. Mean over the seeds finished so far; base arms at n = 0.',
  )
    .withVariable(sweepVariable())
    .withPanel(
      new BarChartPanelBuilder()
        .title('Top-1 against n, per arm')
        .description(
          'Mean score over finished seeds, grouped by n (0 = base net). Grafana cannot plot against a label, so the paper’s lines are bars here.',
        )
        .datasource(DATASOURCE)
        .unit('percentunit')
        .min(0)
        .max(1)
        .span(24)
        .height(11)
        .showValue(common.VisibilityMode.Auto)
        .legend(new common.VizLegendOptionsBuilder().showLegend(true).placement(common.LegendPlacement.Right))
        .targets([target({ expr: mean, instant: true, table: true }, 0)])
        .transformations([
          {
            id: 'groupingToMatrix',
            options: { rowField: LABELS.n, columnField: LABELS.arm, valueField: 'Value', emptyValue: 'null' },
          },
          { id: 'sortBy', options: { sort: [{ field: `${LABELS.n}\\${LABELS.arm}` }] } },
        ]),
    )
    .withPanel(
      table({
        title: 'Mean top-1 by arm and n',
        description: 'The figure’s numbers: rows are arms, columns are n.',
        queries: [{ expr: mean }],
        unit: 'percentunit',
        transformations: [
          {
            id: 'groupingToMatrix',
            options: { rowField: LABELS.arm, columnField: LABELS.n, valueField: 'Value', emptyValue: 'null' },
          },
        ],
      }),
    )
    .withPanel(
      table({
        title: 'Seeds finished by arm and n',
        description: 'How many seeds each point of the figure averages so far.',
        queries: [{ expr: `count by (${LABELS.arm}, ${LABELS.n}) (${m.cellScore}${sel(SWEEP)})` }],
        transformations: [
          {
            id: 'groupingToMatrix',
            options: { rowField: LABELS.arm, columnField: LABELS.n, valueField: 'Value', emptyValue: 'null' },
          },
        ],
      }),
    )
    .withPanel(
      table({
        title: 'Finished cells',
        description: 'Every finished cell with its score.',
        queries: [{ expr: `${m.cellScore}${sel(SWEEP)}` }],
        unit: 'percentunit',
        width: 24,
        transformations: [hideTime],
      }),
    );
}

function serviceHealth(): dashboard.DashboardBuilder {
  const calls = (extra: string[] = []) =>
    `sum by (${RPC_BY}) (rate(${m.rpcServerDuration}_count${sel(SERVICE, extra)}[5m]))`;
  return base(
    'transferlab-service-health',
    'transferlab / Service health',
    'Scrape targets up or down, and the gRPC servers’ call rates, errors and latencies by method.',
  )
    .withVariable(
      new dashboard.QueryVariableBuilder('service')
        .label('Service')
        .datasource(DATASOURCE)
        // target_info carries service_namespace="transferlab": only transferlab's targets are listed.
        .query(`label_values(target_info{service_namespace="transferlab"}, ${LABELS.service})`)
        .definition(`label_values(target_info{service_namespace="transferlab"}, ${LABELS.service})`)
        .refresh(dashboard.VariableRefresh.OnTimeRangeChanged)
        .sort(dashboard.VariableSort.AlphabeticalAsc)
        .multi(true)
        .includeAll(true),
    )
    .withPanel(
      stat({
        title: 'Up',
        description: 'Whether Prometheus reached each target at its last scrape (1 = up).',
        queries: [{ expr: `${m.up}${sel(SERVICE)}`, legend: `{{${LABELS.service}}} {{instance}}` }],
        width: 24,
        height: 4,
      }),
    )
    .withPanel(
      timeseries({
        title: 'gRPC calls per second',
        description: 'By method and status code (0 = OK).',
        queries: [
          {
            expr: `sum by (${RPC_BY}, rpc_grpc_status_code) (rate(${m.rpcServerDuration}_count${sel(SERVICE)}[5m]))`,
            legend: '{{rpc_method}} {{rpc_grpc_status_code}}',
          },
        ],
        unit: 'reqps',
      }),
    )
    .withPanel(
      timeseries({
        title: 'gRPC error ratio',
        description: 'Share of calls that ended with a status other than OK, by method (0 when none failed).',
        queries: [
          {
            expr: `(${calls(['rpc_grpc_status_code!="0"'])} or 0 * ${calls()}) / ${calls()}`,
            legend: '{{rpc_method}}',
          },
        ],
        unit: 'percentunit',
      }),
    )
    .withPanel(
      timeseries({
        title: 'gRPC latency (99th percentile)',
        description: 'By method. Streams (WatchSweep, RunCell) count until they end.',
        queries: [
          {
            expr: `histogram_quantile(0.99, sum by (le, ${RPC_BY}) (rate(${m.rpcServerDuration}_bucket${sel(SERVICE)}[5m])))`,
            legend: '{{rpc_method}}',
          },
        ],
        unit: 's',
      }),
    )
    .withPanel(
      timeseries({
        title: 'gRPC latency (median)',
        description: 'By method.',
        queries: [
          {
            expr: `histogram_quantile(0.5, sum by (le, ${RPC_BY}) (rate(${m.rpcServerDuration}_bucket${sel(SERVICE)}[5m])))`,
            legend: '{{rpc_method}}',
          },
        ],
        unit: 's',
      }),
    );
}

export function buildDashboards(): dashboard.Dashboard[] {
  return [sweepOverview(), trainingCurves(), figure2(), serviceHealth()].map((builder) => builder.build());
}

// ------------------------------------------------------------------ expressions and rules

export interface DashboardExpression {
  dashboard: string;
  panel: string;
  refId: string;
  /** As in the dashboard, with Grafana variables. */
  expr: string;
  /** With each variable set to its "All" value: plain PromQL. */
  promql: string;
  /** What Grafana runs: an instant query (the value now) or a range query (over the time range). */
  instant: boolean;
  /** The recording rule's name. */
  record: string;
}

const slug = (text: string): string =>
  text
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '_')
    .replace(/^_+|_+$/g, '');

export function expandVariables(expr: string): string {
  return expr.replace(/\$\{?(\w+)\}?/g, (whole, name: string) => {
    const value = VARIABLE_VALUES[name];
    if (value === undefined) throw new Error(`expression uses $${name}, which has no value to check it with: ${expr}`);
    return value;
  });
}

/** Every expression of every panel, in dashboard and panel order. */
export function dashboardExpressions(dashboards = buildDashboards()): DashboardExpression[] {
  const found: DashboardExpression[] = [];
  for (const board of dashboards) {
    const panels = (board.panels ?? []).flatMap((panel) =>
      'panels' in panel && Array.isArray(panel.panels) ? [panel, ...panel.panels] : [panel],
    );
    for (const panel of panels) {
      if (!('targets' in panel)) continue;
      for (const query of (panel.targets ?? []) as prometheus.Dataquery[]) {
        const title = panel.title ?? 'untitled';
        found.push({
          dashboard: board.uid!,
          panel: title,
          refId: query.refId ?? 'A',
          expr: query.expr,
          promql: expandVariables(query.expr),
          instant: query.instant === true,
          record: `transferlab:${slug(board.uid!.replace(/^transferlab-/, ''))}:${slug(title)}:${slug(query.refId ?? 'A')}`,
        });
      }
    }
  }
  const names = found.map((expression) => expression.record);
  const twice = names.filter((name, index) => names.indexOf(name) !== index);
  if (twice.length > 0) throw new Error(`two panels make the same rule name: ${twice.join(', ')}`);
  return found;
}

export interface VariableQuery {
  dashboard: string;
  variable: string;
  /** The series selector of `label_values(SELECTOR, LABEL)`, variables set to "All". */
  selector: string;
  label: string;
}

/** Every `label_values` query of the dashboards' variables: the test asks Prometheus each one. */
export function variableQueries(dashboards = buildDashboards()): VariableQuery[] {
  const found: VariableQuery[] = [];
  for (const board of dashboards) {
    for (const variable of board.templating?.list ?? []) {
      if (variable.type !== 'query') continue;
      const match = /^label_values\((.+),\s*(\w+)\)$/.exec(String(variable.query));
      if (!match)
        throw new Error(`${board.uid}: variable ${variable.name}: not a label_values query: ${variable.query}`);
      found.push({
        dashboard: board.uid!,
        variable: variable.name,
        selector: expandVariables(match[1]!),
        label: match[2]!,
      });
    }
  }
  return found;
}

/** The recording rules, one group per dashboard (YAML; JSON strings are valid YAML scalars). */
export function renderRules(expressions = dashboardExpressions()): string {
  const lines = [
    '# Generated by `pnpm dashboards` (deploy/grafana/dashboards.ts): do not edit.',
    '# Every Grafana dashboard expression as a recording rule, its variables set to their "All"',
    '# value, so `promtool check rules` validates the PromQL and test/telemetry-e2e.test.ts',
    '# evaluates each one against a real Prometheus. Loading them into Prometheus is optional.',
    'groups:',
  ];
  for (const uid of [...new Set(expressions.map((expression) => expression.dashboard))]) {
    lines.push(`  - name: ${uid}`, '    rules:');
    for (const expression of expressions.filter((e) => e.dashboard === uid)) {
      lines.push(
        `      - record: ${expression.record}`,
        `        expr: ${JSON.stringify(expression.promql)}`,
        '        labels:',
        `          dashboard: ${JSON.stringify(expression.dashboard)}`,
        `          panel: ${JSON.stringify(expression.panel)}`,
      );
    }
  }
  return `${lines.join('\n')}\n`;
}

/** Every generated file: repository-relative path → content, formatted as prettier would. */
export async function renderFiles(): Promise<Map<string, string>> {
  const dashboards = buildDashboards();
  const files = new Map<string, string>();
  const pretty = async (text: string, path: string): Promise<string> =>
    format(text, { ...(await resolveConfig(join(REPO, path))), filepath: join(REPO, path) });
  for (const board of dashboards) {
    for (const dir of DASHBOARD_DIRS) {
      const path = `${dir}/${board.uid}.json`;
      files.set(path, await pretty(JSON.stringify(board, null, 2), path));
    }
  }
  files.set(RULES_FILE, await pretty(renderRules(dashboardExpressions(dashboards)), RULES_FILE));
  return files;
}

/** The generated files whose committed copy is missing or differs. */
export async function staleFiles(): Promise<string[]> {
  const stale: string[] = [];
  for (const [path, content] of await renderFiles()) {
    const committed = await readFile(join(REPO, path), 'utf8').catch(() => undefined);
    if (committed !== content) stale.push(path);
  }
  return stale;
}

async function main(): Promise<void> {
  if (process.argv.includes('--check')) {
    const stale = await staleFiles();
    if (stale.length > 0) {
      console.error(`dashboards: out of date (run \`pnpm dashboards\`): ${stale.join(', ')}`);
      process.exit(1);
    }
    console.log('dashboards: up to date');
    return;
  }
  for (const [path, content] of await renderFiles()) {
    await mkdir(dirname(join(REPO, path)), { recursive: true });
    await writeFile(join(REPO, path), content);
    console.log(`wrote ${path}`);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
